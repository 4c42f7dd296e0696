"""recbole-dns: Dynamic Negative Sampling for contrastive recommendation, as a RecBole extension."""

from recbole_dns import compat

compat.apply()  # RecBole 1.2.1 on today's SciPy / torch / pandas: see recbole_dns/compat.py

from recbole_dns.dns import DNSBatch, DNSModel, DNSPool, build_pool, dns_loss  # noqa: E402
from recbole_dns.config import Config, ConfigError  # noqa: E402
from recbole_dns.models import get_model, register_model  # noqa: E402
from recbole_dns.trainer import DNSTrainer, get_trainer  # noqa: E402
from recbole_dns.quick_start import load_data_and_model, prepare, run_recbole_dns  # noqa: E402

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
