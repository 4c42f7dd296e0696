"""``run_recbole_dns.py`` / ``recbole-dns``: the command line, with the flags of RecBole's ``run_recbole.py``.

``recbole-dns experiments ...`` is ``python -m recbole_dns.experiments ...``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from recbole_dns.errors import ConfigError, DistributedError
from recbole_dns.launcher import run

DEFAULT_MODEL, DEFAULT_DATASET = "BPR_DNS", "ml-100k"


def _from_config_files(files: list[str], key: str) -> str | None:
    import os

    import yaml

    value = None
    for path in files:
        if not os.path.isfile(path):
            raise ConfigError(f"config file not found: {path}")
        with open(path, encoding="utf-8") as f:
            value = (yaml.safe_load(f) or {}).get(key, value)
    return value


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command line, with the flags of RecBole's ``run_recbole.py``; other ``--key=value`` pairs
    go into the config (RecBole's rule). Without flags: BPR_DNS on the embedded ml-100k.
    ``recbole-dns experiments ...`` is ``python -m recbole_dns.experiments ...``."""
    args_in = sys.argv[1:] if argv is None else list(argv)
    if args_in[:1] == ["experiments"]:
        from recbole_dns.experiments import main as experiments_main

        return experiments_main(args_in[1:])
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", "-m", type=str, default=None, help=f"model name (default {DEFAULT_MODEL})")
    parser.add_argument("--dataset", "-d", type=str, default=None, help=f"dataset name (default {DEFAULT_DATASET})")
    parser.add_argument("--config_files", type=str, default=None, help="config files, separated by spaces")
    parser.add_argument("--resume", type=str, default=None, help="checkpoint (.pth) to resume training from")
    # distributed training (torch DDP), as RecBole's run_recbole.py: see recbole_dns.launcher
    parser.add_argument("--nproc", type=int, default=1, help="processes (ranks) on this machine")
    parser.add_argument("--world_size", type=int, default=-1, help="ranks on all machines (default: nproc)")
    parser.add_argument("--ip", type=str, default="localhost", help="address of the machine of rank 0")
    parser.add_argument("--port", type=str, default="5678", help="port of rank 0")
    parser.add_argument("--group_offset", type=int, default=0, help="global rank of this machine's first process")
    args, _ = parser.parse_known_args(argv)
    files = args.config_files.strip().split() if args.config_files else None
    try:
        model = args.model or _from_config_files(files or [], "model") or DEFAULT_MODEL
        dataset = args.dataset or _from_config_files(files or [], "dataset") or DEFAULT_DATASET
        result = run(model=model, dataset=dataset, config_file_list=files, resume_file=args.resume,
                     nproc=args.nproc, world_size=args.world_size, ip=args.ip, port=args.port,
                     group_offset=args.group_offset)
    except (ConfigError, FileNotFoundError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    except DistributedError as err:
        parser.exit(1, f"{parser.prog}: error: {err}\n")
    if result is None:  # not global rank 0's machine
        return {}
    test = result["test_result"] or {}
    print("test " + "  ".join(f"{k}: {test[k]:.4f}" for k in ("ndcg@10", "recall@10", "map@10") if k in test))
    return result
