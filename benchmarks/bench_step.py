"""Where a `_DNS` training step spends its time against its base's, part by part, side by side.

    python benchmarks/bench_step.py --dataset=amazon-beauty --data_path=../shared/datasets [--base=LightGCN]

One training step of RecBole's trainer, split into: the loader's batch (RecBole's uniform negative included), the
forward pass (``calculate_loss``; for the `_DNS` variant also the draw of ``i'-`` from the pool alone, which is
inside it), the backward pass and the optimiser's step. ``--batches`` steps of each model, the two alternated
``--reps`` times, medians of the per-batch milliseconds. The variant runs the mechanism as the paper has
it (``dns_preset: paper``, pool built once before timing; ``bench_dns.py`` adds the refresh, amortised over
``dns_n``). Issue 21 asks why a BPR_DNS epoch is more than 1.1x BPR's: this says which part of the step it is.

Also, on the variant's tables and one batch's ids (the user, and the positive, static and contrastive negative
items stacked as the DNS loss looks them up): the lookups' backward through torch's ``F.embedding``
against :func:`recbole_dns.shims.lookup` (which both models use), alternated, and whether their gradients are
bitwise equal.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from harness import add_data_args, sync, trainer_for  # this folder; puts the repository on sys.path

from recbole_dns.shims import lookup

PARTS = ("batch", "forward", "backward", "optimiser")
DRAW = "draw of i'-"  # timed apart, after the step: it is part of the forward


def setup(args: argparse.Namespace, model: str) -> tuple:
    """(trainer, loader) of ``model`` on the data the options give, the mechanism as the paper has it (its loss
    compiled with ``--compile``)."""
    _, trainer, train = trainer_for(args, model, {"dns_compile": True} if args.compile and model.endswith("_DNS") else {},
                                    paper=True)
    return trainer, train


def time_steps(trainer, train, batches: int, device: torch.device) -> dict[str, list[float]]:
    """Milliseconds of each part of ``batches`` training steps (one pass of the loader, cut short)."""
    model, opt = trainer.model, trainer.optimizer
    model.train()
    out: dict[str, list[float]] = {p: [] for p in PARTS}
    draw = getattr(model, "dns_negatives", None)
    if draw is not None:
        out[DRAW] = []
    it = iter(train)
    for _ in range(batches):
        sync(device)
        t0 = time.perf_counter()
        inter = next(it).to(device)
        sync(device)
        t1 = time.perf_counter()
        losses = model.calculate_loss(inter)
        loss = sum(losses) if isinstance(losses, tuple) else losses
        sync(device)
        t2 = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        sync(device)
        t3 = time.perf_counter()
        opt.step()
        sync(device)
        t4 = time.perf_counter()
        for part, (a, b) in zip(PARTS, [(t0, t1), (t1, t2), (t2, t3), (t3, t4)]):
            out[part].append((b - a) * 1e3)
        if draw is not None:
            with torch.no_grad():
                tables = model.train_tables() if model.dns_candidates else (None, None)
                sync(device)
                t5 = time.perf_counter()
                draw(inter, *tables)
                sync(device)
                out[DRAW].append((time.perf_counter() - t5) * 1e3)
    return out


def lookup_backward(trainer, train, reps: int, device: torch.device) -> dict:
    """Milliseconds (medians of ``reps``, alternated) of the backward of one batch's lookups (their forward is the same
    ``index_select``) through ``F.embedding`` and through :func:`~recbole_dns.shims.lookup`, and whether the two
    gradients are bitwise equal."""
    model = trainer.model
    inter = next(iter(train)).to(device)
    with torch.no_grad():
        user_table, item_table = (t.detach() for t in model.train_tables())
        item_ids = torch.stack([inter[model.ITEM_ID], inter[model.NEG_ITEM_ID],
                                model.dns_negatives(inter, user_table, item_table)[:, 0]])
    users = inter[model.USER_ID]
    upstream = (torch.randn(len(users), user_table.shape[1], device=device),
                torch.randn(*item_ids.shape, item_table.shape[1], device=device))

    def run(fn):
        tables = user_table.clone().requires_grad_(), item_table.clone().requires_grad_()
        outputs = [fn(users, tables[0]), fn(item_ids, tables[1])]
        sync(device)
        start = time.perf_counter()
        torch.autograd.backward(outputs, list(upstream))
        sync(device)
        return (time.perf_counter() - start) * 1e3, tables[0].grad, tables[1].grad

    arms = {"F.embedding": F.embedding, "lookup": lookup}
    ms = {name: [] for name in arms}
    for _ in range(reps):
        for name, fn in arms.items():
            ms[name].append(run(fn)[0])
    ref, ours = run(arms["F.embedding"]), run(arms["lookup"])
    return {"ms": {name: statistics.median(v) for name, v in ms.items()},
            "bitwise_equal": bool(torch.equal(ref[1], ours[1]) and torch.equal(ref[2], ours[2])),
            "ids": f"users [{len(users)}] + items {list(item_ids.shape)}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(parser)
    parser.add_argument("--base", default="BPR", help="base model; its _DNS variant is compared to it")
    parser.add_argument("--compile", action="store_true", help="the _DNS variant with dns_compile: true")
    parser.add_argument("--batches", type=int, default=20, help="steps timed per repetition")
    parser.add_argument("--reps", type=int, default=5, help="repetitions, the two models alternated")
    args = parser.parse_args()
    if args.batches < 1 or args.reps < 1:
        parser.error("--batches and --reps must be >= 1")
    names = (args.base, args.base + "_DNS")
    runs = {name: setup(args, name) for name in names}
    runs[names[1]][0].model.on_epoch_start(0)  # the pool, built once: the refresh is bench_dns.py's
    device = runs[names[0]][0].device
    for name in names:  # warm-up
        time_steps(*runs[name], min(3, args.batches), device)
    ms: dict[str, dict[str, list[float]]] = {name: {} for name in names}
    for _ in range(args.reps):
        for name in names:
            for part, values in time_steps(*runs[name], args.batches, device).items():
                ms[name].setdefault(part, []).extend(values)
    med = {name: {part: statistics.median(v) for part, v in parts.items()} for name, parts in ms.items()}
    for name in names:
        med[name]["step"] = sum(med[name][p] for p in PARTS)
    base, dns = med[names[0]], med[names[1]]
    print(json.dumps({"dataset": args.dataset, "batch_size": args.batch_size, "device": args.device,
                      "threads": torch.get_num_threads(), "ms_per_step": med}, indent=1))
    extra = dns["step"] - base["step"]
    compiled = " (dns_compile: true)" if args.compile else ""
    print(f"\n{names[1]}{compiled} vs {names[0]}, {args.dataset}, batch {args.batch_size}, {args.device}, "
          f"{torch.get_num_threads()} threads; ms per step (medians of {args.reps} x {args.batches} steps)")
    print(f"| part | {names[0]} | {names[1]} | ratio | share of the extra |\n|---|---|---|---|---|")
    for part in (*PARTS, "step"):
        share = f"{(dns[part] - base[part]) / extra:.0%}" if part != "step" and extra > 0 else ""
        print(f"| {part} | {base[part]:.2f} | {dns[part]:.2f} | {dns[part] / base[part]:.2f}x | {share} |")
    if DRAW in dns:
        print(f"| (draw of i'-, inside the forward) | | {dns[DRAW]:.2f} | | |")
    look = lookup_backward(*runs[names[1]], max(5, args.reps * 4), device)
    print(f"\nlookups of one batch ({look['ids']}), backward: F.embedding {look['ms']['F.embedding']:.2f} ms, "
          f"shims.lookup {look['ms']['lookup']:.2f} ms ({look['ms']['lookup'] / look['ms']['F.embedding']:.2f}x); "
          f"gradients bitwise equal: {look['bitwise_equal']}")


if __name__ == "__main__":
    main()
