"""What the benchmarks here share: the timer, the peak-memory probe, the data options and the trainers they time."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device | str) -> tuple[float, Any]:
    """``(seconds, fn())``, the device synchronised before and after."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_extra_bytes(fn: Callable[[], Any], device: torch.device | str) -> tuple[int, Any]:
    """``(bytes, fn())``: the peak memory ``fn`` took above the state before it: the CUDA allocator's peak, or on
    the CPU the peak RSS (Linux: VmHWM reset to the current RSS first; run it in a fresh process for a clean figure)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        out = fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before, out
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    before = _status_kib("VmHWM")
    out = fn()
    return (_status_kib("VmHWM") - before) * 1024, out


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """The options every epoch benchmark here shares: dataset, data path, device, batch size."""
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--data_path", default=str(ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch_size", type=int, default=2048)


def data_config(args: argparse.Namespace) -> dict:
    """The config those options give (``--data_path`` dropped for a dataset RecBole ships, e.g. ml-100k)."""
    if args.data_path and not os.path.isdir(os.path.join(args.data_path, args.dataset)):
        args.data_path = None
    return {"show_progress": False, "state": "WARNING", "train_batch_size": args.batch_size,
            "use_gpu": args.device == "cuda", **({"data_path": args.data_path} if args.data_path else {})}


def trainer_for(args: argparse.Namespace, model: str, config: dict | None = None, paper: bool = False) -> tuple:
    """``(config, trainer, train loader)`` of ``model`` on the data the options give, with ``config`` on top;
    ``paper``: a ``_DNS`` model runs the mechanism as the paper has it, from epoch 0 (``dns_preset: paper``;
    BPR_DNS's default warms up first)."""
    from recbole_dns.config import with_dns_preset
    from recbole_dns.quick_start import prepare

    config = {**data_config(args), **(config or {})}
    if paper:
        config = with_dns_preset(model, config)
    cfg, trainer, train, _, _ = prepare(model, args.dataset, None, config)
    return cfg, trainer, train


def epoch_table(args: argparse.Namespace, title: str, med: dict[str, float], refs: dict[str, str],
                extra: dict | None = None) -> None:
    """Print the medians ``med`` (row -> s / epoch) as JSON (with ``extra``'s fields) and as a markdown table with
    one ratio column per entry of ``refs`` (column heading -> reference row)."""
    print(json.dumps({**(extra or {}), "dataset": args.dataset, "batch_size": args.batch_size,
                      "threads": torch.get_num_threads(), "device": args.device, "epoch_s": med}, indent=1))
    print(f"\n{args.dataset}, batch {args.batch_size}, {args.device}, {torch.get_num_threads()} threads; {title}")
    print("| row | s / epoch | " + " | ".join(refs) + " |\n|---|---|" + "---|" * len(refs))
    for label, s in med.items():
        print(f"| {label} | {s:.2f} | " + " | ".join(f"{s / med[ref]:.2f}x" for ref in refs.values()) + " |")
