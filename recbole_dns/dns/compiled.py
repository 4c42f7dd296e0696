"""``dns_compile: true``: the batch loss (:func:`~recbole_dns.dns.loss.dns_loss_parts`) through ``torch.compile``.

Eager PyTorch makes a dozen passes over the ``[K, B, d]`` candidate embeddings for the cosine, the
log-sum-exp and their backward; compiled, the forward and the backward are each about one fused loop. On the
CPU that makes a BPR_DNS step as fast as a BPR step, but an epoch only 6-9% faster on amazon-beauty and 2% on
gowalla (docs/benchmarks.md, "The loss compiled"), for a one-off compile of 14-16 s on a new machine and 4-6 s
once torch's on-disk cache holds it: it pays on large data and long runs only, so it is off by default. Where
compiling fails (no C++ compiler, an unsupported platform), one warning says so and the run
goes on with the eager loss, which gives the same values.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch

from recbole_dns.dns.loss import dns_loss_parts


class CompiledLoss:
    """:func:`dns_loss_parts` compiled once per process (batch size, ``K``, ``d`` and ``tau`` symbolic, so
    neither the last short batch nor a sweep over ``tau`` recompiles), or the eager function after a failed
    compile. The first call per (device, dtype, similarity, reduction) compiles forward and backward on a
    small probe batch, so that a failure surfaces here and not inside the trainer's ``backward()``."""

    def __init__(self) -> None:
        self._compiled: Callable | None = None
        self._probed: set[tuple] = set()
        self.failed: str | None = None  # why compiling failed, once it has

    def __call__(self, user_e: torch.Tensor, candidates: torch.Tensor, tau: float, similarity: str = "cosine",
                 reduction: str = "mean") -> tuple:
        if self.failed is None:
            key = (user_e.device.type, user_e.dtype, similarity, reduction)
            if key not in self._probed:
                self._probe(user_e, candidates, tau, similarity, reduction)
                self._probed.add(key)
        if self.failed is not None or not (user_e.requires_grad or candidates.requires_grad):
            return dns_loss_parts(user_e, candidates, tau, similarity, reduction)
        return self._compiled(user_e, candidates, tau, similarity, reduction)

    def _probe(self, user_e: torch.Tensor, candidates: torch.Tensor, tau: float, similarity: str,
               reduction: str) -> None:
        k, d = candidates.shape[0], candidates.shape[-1]
        try:
            if self._compiled is None:
                self._compiled = torch.compile(dns_loss_parts, dynamic=True)
            u = torch.randn(8, d, dtype=user_e.dtype, device=user_e.device, requires_grad=True)
            c = torch.randn(k, 8, d, dtype=candidates.dtype, device=candidates.device, requires_grad=True)
            with torch.enable_grad():
                loss, _, user_sq, items_sq = self._compiled(u, c, tau, similarity, reduction)
                if user_sq is not None:
                    loss = loss + user_sq.sum() + items_sq.sum()
                loss.backward()
        except Exception as e:  # any compiler or platform failure: the eager loss gives the same values
            self.failed = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            warnings.warn(f"dns_compile: torch.compile failed on this machine ({self.failed[:300]}); the DNS "
                          "loss runs eagerly (same values, slower). Set dns_compile: false to skip the attempt.",
                          RuntimeWarning, stacklevel=3)


#: one per process: every model shares the compiled code
compiled_loss = CompiledLoss()


def loss_function(compiled: bool) -> Callable:
    """The batch loss: :data:`compiled_loss` with ``dns_compile: true``, else the eager :func:`dns_loss_parts`."""
    return compiled_loss if compiled else dns_loss_parts
