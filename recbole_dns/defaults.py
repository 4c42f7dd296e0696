"""The package's YAML defaults, one source for every default value and list of presets.

``properties/overall.yaml`` holds the engineering keys, ``properties/presets/paper.yaml`` the DNS
mechanism's keys (the paper's setting), ``properties/model/`` and ``properties/dataset/`` the per-model and
per-dataset defaults. :class:`recbole_dns.Config` loads them; code that needs a default outside a Config
(a function's default argument, a command-line default) reads it with :func:`default`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

#: the YAML defaults, shipped inside the package
PROPERTIES = Path(__file__).resolve().parent / "properties"

#: the preset of the paper's setting: the DNS keys' defaults, and what the paper's study pins
PAPER_PRESET = "paper"


def _load(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


@functools.lru_cache(maxsize=None)
def _defaults() -> dict:
    return {**_load(PROPERTIES / "overall.yaml"), **_load(preset_file(PAPER_PRESET))}


def default(key: str) -> Any:
    """The package's default of config key ``key`` (``overall.yaml``, then the paper's preset)."""
    return _defaults()[key]


def preset_file(name: str) -> Path:
    """``properties/presets/<name>.yaml``."""
    return PROPERTIES / "presets" / f"{name}.yaml"


def presets() -> tuple[str, ...]:
    """The names ``dns_preset`` accepts: the files of ``properties/presets/``."""
    return tuple(sorted(p.stem for p in (PROPERTIES / "presets").glob("*.yaml")))
