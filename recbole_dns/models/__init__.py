"""Model registry: this package's models first, then every built-in RecBole model.

RecBole 1.2.1's ``get_model`` only looks inside ``recbole.model`` and turns an unknown name into a
lightgbm ``ModuleNotFoundError``; :func:`get_model` here gives a clear error instead.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
import re
from pathlib import Path

from recbole_dns.errors import ConfigError

#: this package's models: name -> module
PACKAGE_MODELS: dict[str, str] = {
    "BPR": "recbole_dns.models.bpr",
    "BPR_DNS": "recbole_dns.models.bpr_dns",
    "LightGCN": "recbole_dns.models.lightgcn",
    "LightGCN_DNS": "recbole_dns.models.lightgcn_dns",
    "SGL": "recbole_dns.models.sgl",
    "SGL_DNS": "recbole_dns.models.sgl_dns",
    "SimGCL": "recbole_dns.models.simgcl",
    "SimGCL_DNS": "recbole_dns.models.simgcl_dns",
    "MixGCF": "recbole_dns.models.mixgcf",
    "PRIS": "recbole_dns.models.pris",
}

#: base model -> its DNS variant (what ``dns: true`` selects)
DNS_VARIANTS: dict[str, str] = {
    "BPR": "BPR_DNS",
    "LightGCN": "LightGCN_DNS",
    "SGL": "SGL_DNS",
    "SimGCL": "SimGCL_DNS",
}

_RECBOLE_SUBMODULES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
    "exlib_recommender",
)


@functools.lru_cache(maxsize=None)
def recbole_models() -> dict[str, str]:
    """RecBole's built-in model names -> module path, read from its package files (no import)."""
    spec = importlib.util.find_spec("recbole.model")
    root = Path(next(iter(spec.submodule_search_locations)))
    found: dict[str, str] = {}
    for sub in _RECBOLE_SUBMODULES:
        text = (root / sub / "__init__.py").read_text(encoding="utf-8")
        for module, name in re.findall(r"from\s+(recbole\.model\.[\w.]+)\s+import\s+(\w+)", text):
            found[name] = module
    return found


def model_names() -> list[str]:
    """Every model name :func:`get_model` accepts."""
    return sorted(set(PACKAGE_MODELS) | set(recbole_models()))


def get_model(name: str) -> type:
    """The model class called ``name``: this package's, else RecBole's built-in one.

    Raises:
        ConfigError: unknown name (with close matches), or a model whose library is not installed.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"model must be a model name (str); got {name!r}")
    if name in PACKAGE_MODELS:
        return getattr(importlib.import_module(PACKAGE_MODELS[name]), name)
    builtin = recbole_models()
    if name in builtin:
        try:
            return getattr(importlib.import_module(builtin[name]), name)
        except ImportError as err:
            raise ConfigError(f"model {name!r} needs a library that is not installed: {err}") from None
    close = difflib.get_close_matches(name, model_names(), n=3, cutoff=0.6)
    lower = [m for m in model_names() if m.lower() == name.lower()]
    hint = f" Did you mean {', '.join(repr(m) for m in (lower or close))}?" if (lower or close) else ""
    raise ConfigError(
        f"unknown model {name!r}.{hint} recbole_dns models: {', '.join(sorted(PACKAGE_MODELS))}; "
        f"plus RecBole's built-in models ({len(builtin)}, e.g. LightGCN, NGCF, SASRec)."
    )


def dns_variant(name: str) -> str:
    """The DNS variant of model ``name`` (``name`` itself if it already is one).

    Raises:
        ConfigError: the model has no DNS variant; the message lists the supported models.
    """
    if name in DNS_VARIANTS.values():
        return name
    if name in DNS_VARIANTS:
        return DNS_VARIANTS[name]
    raise ConfigError(
        f"dns: true is not supported for model {name!r}. Models with a DNS variant: "
        + ", ".join(f"{base} -> {var}" for base, var in sorted(DNS_VARIANTS.items()))
    )


def is_dns_model(name: str) -> bool:
    return name in DNS_VARIANTS.values()


def base_of(name: str) -> str | None:
    """The base model of a DNS variant (``BPR_DNS`` -> ``BPR``), else ``None``."""
    for base, var in DNS_VARIANTS.items():
        if var == name:
            return base
    return None
