"""recbole-dns: Dynamic Negative Sampling for contrastive recommendation, as a RecBole extension.

The package's face. Its layers, low to high (nothing imports upward): ``errors``, ``defaults``, ``shims`` ->
``parallel`` and the helpers (``sampling``, ``graph``, ``losses``, ``stats``) -> ``dns`` (the mechanism) and
``negatives`` (hard negatives for any pairwise model) ->
``models`` -> ``trainer``, ``checks``, ``checkpoint``, ``evaluation``, ``diagnostics`` -> ``config`` ->
``quick_start`` (the runner) -> ``launcher`` -> ``cli``, ``tune``, ``experiments``.
"""

from recbole_dns.dns import DNSBatch, DNSModel, DNSPool, build_pool, dns_loss
from recbole_dns.errors import ConfigError
from recbole_dns.models import get_model, register_model
from recbole_dns.trainer import DNSTrainer, get_trainer
from recbole_dns.config import Config
from recbole_dns.quick_start import load_data_and_model, prepare, run_recbole_dns

__version__ = "0.1.0"

__all__ = [
    "build_pool",
    "dns_loss",
    "DNSPool",
    "DNSModel",
    "DNSBatch",
    "Config",
    "ConfigError",
    "get_model",
    "register_model",
    "get_trainer",
    "DNSTrainer",
    "run_recbole_dns",
    "prepare",
    "load_data_and_model",
]
