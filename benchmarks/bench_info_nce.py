"""SGL's and SimGCL's InfoNCE, forward and backward, side by side in one run.

    python benchmarks/bench_info_nce.py [--threads 1] [--reps 7]

At SGL's size on amazon-beauty (a batch of 2,048 anchors against a table of 22,364 users) and SimGCL's (2,048 against
the 2,048 rows of the other view), three ways to compute the same loss and its gradients: RecBole's formula (the whole
``[B, n]`` score matrix, then log-softmax), the blocked log-sum-exp with the row maxima (``bounded=False``: every block's
scores shifted by their maxima, three passes over them each way), and the blocked log-sum-exp as
:func:`recbole_dns.losses.info_nce_table` runs it (the scores bounded by ``1 / tau``: one pass each way), at several
block sizes. Medians of ``--reps`` repetitions, the ways alternated; ratios against RecBole's formula.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import harness  # noqa: F401 - this folder; puts the repository on sys.path
from recbole_dns import losses

SIZES = {"SGL (2,048 x 22,364)": (2048, 22364), "SimGCL (2,048 x 2,048)": (2048, 2048)}
BLOCKS = (32, 64, 128, 256)
TAU = 0.2


def recbole_form(anchor: torch.Tensor, table: torch.Tensor, rows: torch.Tensor, tau: float) -> torch.Tensor:
    """RecBole's SGL InfoNCE: every score at once."""
    a, t = F.normalize(anchor, dim=1), F.normalize(table, dim=1)
    scores = a @ t.t() / tau
    return -(scores.log_softmax(dim=1).gather(1, rows[:, None])).sum()


def blocked(block: int, bound: bool):
    def loss(anchor: torch.Tensor, table: torch.Tensor, rows: torch.Tensor, tau: float) -> torch.Tensor:
        return losses.info_nce_table(anchor, table, rows, tau, block=block, bounded=bound)
    return loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (an experiment run has one)")
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.threads} thread(s); forward + backward in ms, median of {args.reps}; block {losses.INFO_NCE_BLOCK_ROWS} "
          "is info_nce_table's")
    for name, (b, n) in SIZES.items():
        g = torch.Generator().manual_seed(0)
        anchor = torch.randn(b, 64, generator=g, requires_grad=True)
        table = torch.randn(n, 64, generator=g, requires_grad=True)
        rows = torch.randint(0, n, (b,), generator=g)
        ways = {"RecBole's formula": recbole_form}
        ways.update({f"blocked {k}, row maxima": blocked(k, False) for k in BLOCKS})
        ways.update({f"blocked {k}, bounded": blocked(k, True) for k in BLOCKS})
        times: dict[str, list[float]] = {w: [] for w in ways}
        ref = None
        for _ in range(args.reps):
            for way, fn in ways.items():
                start = time.perf_counter()
                value = fn(anchor, table, rows, TAU)
                grads = torch.autograd.grad(value, (anchor, table))
                times[way].append((time.perf_counter() - start) * 1e3)
                if ref is None:
                    ref = (value.detach(), grads)
                else:  # the same loss and gradients every way
                    torch.testing.assert_close(value.detach(), ref[0], rtol=1e-4, atol=1e-3)
                    for mine, theirs in zip(grads, ref[1]):
                        torch.testing.assert_close(mine, theirs, rtol=1e-3, atol=1e-6)
        base = statistics.median(times["RecBole's formula"])
        print(f"\n{name}\n| way | ms | vs RecBole's formula |\n|---|---|---|")
        for way, ts in times.items():
            m = statistics.median(ts)
            print(f"| {way} | {m:.1f} | {m / base:.2f}x |")


if __name__ == "__main__":
    main()
