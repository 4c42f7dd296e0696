"""recbole-dns: Dynamic Negative Sampling for contrastive recommendation, as a RecBole extension."""

from recbole_dns.dns import DNS_NEG_ITEM_ID, DNSModel, DNSPool, build_pool, dns_loss
from recbole_dns.config import Config, ConfigError
from recbole_dns.models import get_model
from recbole_dns.trainer import DNSTrainer, get_trainer
from recbole_dns.quick_start import load_data_and_model, prepare, run_recbole_dns

__version__ = "0.1.0"

__all__ = [
    "build_pool",
    "dns_loss",
    "DNSPool",
    "DNSModel",
    "DNS_NEG_ITEM_ID",
    "Config",
    "ConfigError",
    "get_model",
    "get_trainer",
    "DNSTrainer",
    "run_recbole_dns",
    "prepare",
    "load_data_and_model",
]
