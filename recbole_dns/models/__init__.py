"""Model registry: models registered by the user, this package's models, then every built-in RecBole model.

This package's models are found by convention: every recommender class defined in a module of this
folder, by its class name; a class that mixes in :class:`~recbole_dns.dns.DNSModel` is the DNS variant of
its base (what ``dns: true`` selects).

RecBole 1.2.1's ``get_model`` only looks inside ``recbole.model`` and turns an unknown name into a
lightgbm ``ModuleNotFoundError``; :func:`get_model` here gives a clear error instead. A user's own model
(and its DNS variant) joins with :func:`register_model`.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
import pkgutil
import re
from pathlib import Path

from recbole.model.abstract_recommender import AbstractRecommender

from recbole_dns.dns import DNSModel
from recbole_dns.errors import ConfigError
from recbole_dns.shims import restore_dok_update

#: models registered with :func:`register_model`: name -> class
REGISTERED: dict[str, type] = {}

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
    return sorted(set(REGISTERED) | set(PACKAGE_MODELS) | set(recbole_models()))


def register_model(*classes: type) -> None:
    """Make model classes known by name to ``run_recbole_dns``, the sweeps and the experiments.

    A class that mixes in :class:`~recbole_dns.dns.DNSModel` becomes the DNS variant of its base (the
    first recommender class after the mixins in its MRO, registered too), so that ``dns: true`` on the
    base selects it::

        class MyMF_DNS(DNSModel, MyMF):
            def train_tables(self):
                return self.user_embedding.weight, self.item_embedding.weight

        register_model(MyMF_DNS)   # "MyMF" and "MyMF_DNS"; dns: true on MyMF -> MyMF_DNS
    """
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, AbstractRecommender)):
            raise TypeError(f"register_model takes RecBole model classes; got {cls!r}")
        REGISTERED[cls.__name__] = cls
        base = _dns_base(cls)
        if base is not None:
            if base.__name__ not in PACKAGE_MODELS and base.__name__ not in recbole_models():
                REGISTERED.setdefault(base.__name__, base)
            DNS_VARIANTS[base.__name__] = cls.__name__


def get_model(name: str) -> type:
    """The model class called ``name``: a registered one, this package's, else RecBole's built-in one.

    Raises:
        ConfigError: unknown name (with close matches), or a model whose library is not installed.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"model must be a model name (str); got {name!r}")
    cls = REGISTERED.get(name) or PACKAGE_MODELS.get(name)
    if cls is not None:
        # a subclass of one of RecBole's own models (a user's NGCF_DNS) builds what its base builds
        if any(c.__module__.startswith("recbole.model.") and c.__module__.count(".") > 2 for c in cls.__mro__):
            restore_dok_update()
        return cls
    builtin = recbole_models()
    if name in builtin:
        restore_dok_update()  # RecBole's NGCF, NCL, GCMC and SpectralCF on SciPy >= 1.13
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
        + " (your own model gets one with recbole_dns.register_model, see docs/mechanism.md)"
    )


def is_dns_model(name: str) -> bool:
    return name in DNS_VARIANTS.values()


def base_of(name: str) -> str | None:
    """The base model of a DNS variant (``BPR_DNS`` -> ``BPR``), else ``None``."""
    for base, var in DNS_VARIANTS.items():
        if var == name:
            return base
    return None


def _dns_base(cls: type) -> type | None:
    """The base recommender of a class that mixes in :class:`DNSModel` (the first recommender class after the
    mixins in its MRO); ``None`` for a class that does not mix it in."""
    if not issubclass(cls, DNSModel):
        return None
    base = next((c for c in cls.__mro__[1:] if issubclass(c, AbstractRecommender) and not issubclass(c, DNSModel)), None)
    if base is None or base.__module__ == "recbole.model.abstract_recommender":
        raise TypeError(f"{cls.__name__} mixes in DNSModel but has no base recommender to be a variant of")
    return base


def _discover() -> dict[str, type]:
    """This package's models: the recommender classes defined in the modules of this folder, by name."""
    found: dict[str, type] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, AbstractRecommender) and obj.__module__ == module.__name__:
                found[obj.__name__] = obj
    return found


#: this package's models: name -> class
PACKAGE_MODELS: dict[str, type] = _discover()

#: base model -> its DNS variant (what ``dns: true`` selects); :func:`register_model` adds to it
DNS_VARIANTS: dict[str, str] = {
    base.__name__: cls.__name__ for cls in PACKAGE_MODELS.values() if (base := _dns_base(cls)) is not None
}
