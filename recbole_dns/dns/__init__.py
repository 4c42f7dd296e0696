"""The Dynamic Negative Sampling mechanism, model-agnostic (Section 3.3 of the paper), in six parts:

* :mod:`~recbole_dns.dns.kernel` - :func:`build_pool`, Eq. 4: for every user, the ``k`` allowed items with
  the lowest cosine similarity (or the highest, or ``k`` random ones, for the paper's RQ1 samplers);
* :mod:`~recbole_dns.dns.index` - :func:`index_pool`, the same pool through a vector index (``dns_index``);
* :mod:`~recbole_dns.dns.loss` - :func:`dns_loss`, Eq. 5: ``-log f(u,i+) / (f(u,i-) + f(u,i'-) + f(u,i+))``,
  ``f = exp(cos/tau)``;
* :mod:`~recbole_dns.dns.compiled` - the batch loss through ``torch.compile`` (``dns_compile``);
* :mod:`~recbole_dns.dns.pool` - :class:`DNSPool`: the pool, its schedule (refresh at epochs ``w``, ``w+n``,
  ...), the per-instance draw of ``i'-`` and its checkpoint state;
* :mod:`~recbole_dns.dns.model` - :class:`DNSModel`, the mixin a ``_DNS`` variant puts first among its bases;
  the variant says only how to get its embedding tables and its own extra losses.
"""

from recbole_dns.dns.compiled import CompiledLoss, loss_function
from recbole_dns.dns.index import INDEXES, index_pool, resolve_index
from recbole_dns.dns.kernel import REFRESH_DTYPES, SAMPLERS, ExclusionRows, build_pool, chunk_size_for, sample_distinct
from recbole_dns.dns.loss import SIMILARITIES, cosine, dns_logits, dns_loss, dns_loss_parts, loss_from_logits, stacked_dns_loss
from recbole_dns.dns.model import LOSSES, PREDICTIONS, DNSBatch, DNSModel
from recbole_dns.dns.pool import DRAWS, DNSPool

__all__ = [
    "CompiledLoss", "loss_function", "SAMPLERS", "REFRESH_DTYPES", "SIMILARITIES", "DRAWS", "PREDICTIONS", "LOSSES", "INDEXES",
    "ExclusionRows", "build_pool", "chunk_size_for", "sample_distinct", "index_pool", "resolve_index",
    "cosine", "dns_logits", "dns_loss", "dns_loss_parts", "loss_from_logits", "stacked_dns_loss",
    "DNSPool", "DNSBatch", "DNSModel",
]
