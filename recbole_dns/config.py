"""RecBole configuration for recbole_dns: model resolution, ``dns: true``, YAML defaults, validation of
every key this package adds (in one table, :data:`KEYS`), and ``--set KEY=VALUE`` parsing."""

from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Any

import recbole
import yaml
from recbole.config import Config as RecBoleConfig

from recbole_dns import models
from recbole_dns.defaults import PAPER_PRESET, PROPERTIES, preset_file, presets
from recbole_dns.dns import DRAWS, INDEXES, LOSSES, PREDICTIONS, REFRESH_DTYPES, SAMPLERS, SIMILARITIES
from recbole_dns.dns.pool import is_share
from recbole_dns.errors import ConfigError
from recbole_dns.negatives import HARD_NEGATIVES, with_hard_negatives
from recbole_dns.parallel import init_process_group
from recbole_dns.shims import distributed_run, recbole_is
from recbole_dns.trainer import FUSED_LEARNERS


def with_dns_preset(model: str, config: dict, preset: str | None = PAPER_PRESET) -> dict:
    """``config`` with ``dns_preset: preset`` when ``model`` is a DNS model (or ``config`` has ``dns: true``) and
    ``config`` names no preset; otherwise ``config`` itself. The paper's study, the benchmarks and the tests use
    it to run the paper's mechanism from epoch 0 whatever a variant's own defaults are."""
    if preset and "dns_preset" not in config and (models.is_dns_model(model) or config.get("dns")):
        return {**config, "dns_preset": preset}
    return config


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


#: every key this package adds: key -> (check, description of the allowed values)
KEYS: dict[str, tuple[Any, str]] = {
    "dns": (lambda v: isinstance(v, bool), "true or false"),
    "dns_preset": (lambda v: v is None or v in presets(), f"one of {', '.join(presets())} or null"),
    "dataset_preset": (lambda v: isinstance(v, bool), "true or false"),
    "dns_n": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "dns_k": (lambda v: (_is_int(v) and v >= 1) or is_share(v), "an integer >= 1 or a share of the items in (0, 1)"),
    "dns_tau": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "dns_sampler": (lambda v: v in SAMPLERS, " | ".join(SAMPLERS)),
    "dns_refresh_mb": (lambda v: _is_number(v) and v > 0, "a number > 0 (MiB)"),
    "dns_refresh_dtype": (lambda v: v in REFRESH_DTYPES, " | ".join(REFRESH_DTYPES)),
    "dns_index": (lambda v: v in INDEXES, " | ".join(INDEXES)),
    "dns_index_nprobe": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "dns_compile": (lambda v: isinstance(v, bool), "true or false"),
    "fused_optimizer": (lambda v: isinstance(v, bool), "true or false"),
    "dist_timeout": (lambda v: _is_number(v) and v > 0, "a number > 0 (seconds)"),
    "dns_negs": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "dns_candidates": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "dns_similarity": (lambda v: v in SIMILARITIES, " | ".join(SIMILARITIES)),
    "dns_keep_static": (lambda v: isinstance(v, bool), "true or false"),
    "dns_l2_dns_neg": (lambda v: isinstance(v, bool), "true or false"),
    "dns_warmup": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "dns_skip": (lambda v: (_is_int(v) and v >= 0) or is_share(v),
                 "an integer >= 0 or a share of the items in (0, 1)"),
    "dns_draw": (lambda v: v in DRAWS, " | ".join(DRAWS)),
    "dns_predict": (lambda v: v in PREDICTIONS, " | ".join(PREDICTIONS)),
    "dns_weight": (lambda v: v is None or (_is_number(v) and v >= 0), "a number >= 0 or null"),
    "dns_loss": (lambda v: v in LOSSES, " | ".join(LOSSES)),
    "hard_neg": (lambda v: v in HARD_NEGATIVES, " | ".join(HARD_NEGATIVES)),
    "hard_neg_m": (lambda v: v == "auto" or (_is_int(v) and v >= 1), "an integer >= 1 or auto"),
    "hard_neg_n": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "ahns_alpha": (lambda v: _is_number(v), "a number"),
    "ahns_beta": (lambda v: _is_number(v), "a number"),
    "ahns_p": (lambda v: _is_number(v), "a number"),
    "init_std": (lambda v: v is None or (_is_number(v) and v > 0), "a number > 0 or null"),
    "use_layer0": (lambda v: isinstance(v, bool), "true or false"),
    "train_seed": (lambda v: v is None or _is_int(v), "an integer or null"),
    "log_fn_rate": (lambda v: isinstance(v, bool), "true or false"),
    "log_entropy": (lambda v: isinstance(v, bool), "true or false"),
    "log_grad_share": (lambda v: isinstance(v, bool), "true or false"),
}


def check_key(key: str, value: Any) -> None:
    """Raise :class:`ConfigError` when ``value`` is outside the allowed values of ``key`` (:data:`KEYS`)."""
    check, allowed = KEYS[key]
    if not check(value):
        raise ConfigError(f"config key '{key}' must be {allowed}; got {value!r}")


def validate_config(config: Any) -> None:
    """Raise :class:`ConfigError` for a key of :data:`KEYS` outside its allowed values."""
    for key in KEYS:
        check_key(key, config[key])
    model_class = getattr(config, "model_class", None)
    reads = getattr(model_class, "simgcl_keys", False) if model_class is not None else True
    for key, is_set, unset in (("init_std", config["init_std"] is not None, "init_std: null"),
                               ("use_layer0", bool(config["use_layer0"]), "use_layer0: false")):
        if is_set and not reads:
            raise ConfigError(f"config key '{key}' applies to SimGCL and SimGCL_DNS; model {config['model']!r} "
                              f"keeps its own {'initialisation' if key == 'init_std' else 'layers'} (set {unset})")
    if config["dns_loss"] != "softmax":  # the pool's item goes into the base model's own loss, as its one i-
        for key, ok, wanted in (("dns_weight", config["dns_weight"] is None, "null"),
                                ("dns_negs", config["dns_negs"] == 1, "1"),
                                ("log_grad_share", not config["log_grad_share"], "false")):
            if not ok:
                raise ConfigError(f"config key '{key}' must be {wanted} with dns_loss: {config['dns_loss']} (the "
                                  f"pool's item replaces the base model's one negative; {key} applies to dns_loss: "
                                  f"softmax); got {config[key]!r}")
    learner = str(config["learner"]).lower()
    if config["fused_optimizer"] and learner not in FUSED_LEARNERS:
        raise ConfigError(f"config key 'fused_optimizer' applies to learner {' or '.join(FUSED_LEARNERS)} (torch's fused "
                          f"kernels); learner is {config['learner']!r} (set fused_optimizer: false)")
    dynamic = (config["train_neg_sample_args"] or {}).get("dynamic")
    if config["hard_neg"] != "none" and dynamic:
        raise ConfigError(
            f"hard_neg: {config['hard_neg']} and train_neg_sample_args' dynamic: True both pick hard negatives; "
            "keep one (hard_neg: none, or dynamic: False)"
        )


def yaml_value(text: str) -> Any:
    """A command-line value read as YAML (``5`` an int, ``[1,2]`` a list, ``true`` a bool); text that is not
    YAML (RecBole's intervals such as ``[0,20)``) stays a string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["KEY=VALUE", ...]`` (the ``--set`` option of the experiments, sweeps and benchmarks) as a config
    dict, each value read by :func:`yaml_value`."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set takes KEY=VALUE; got {item!r}")
        overrides[key] = yaml_value(value)
    return overrides


class Config(RecBoleConfig):
    """RecBole's ``Config`` that knows this package's models and defaults.

    * ``model`` is resolved in this package first, then among RecBole's built-in models (clear error
      for an unknown name);
    * ``dns: true`` turns a supported base model into its ``_DNS`` variant;
    * YAML defaults load in this order (later wins): RecBole's, ``properties/overall.yaml``,
      ``properties/presets/paper.yaml`` (the DNS keys' defaults), the base model's RecBole YAML and
      ``properties/model/<base>.yaml`` for a ``_DNS`` variant, ``properties/model/<model>.yaml``,
      ``properties/dataset/<dataset>.yaml`` (unless ``dataset_preset: false``), then
      ``properties/presets/<dns_preset>.yaml`` (the user's ``dns_preset``, else the one the model's YAML names,
      else ``paper``); then config files, ``config_dict`` and the command line;
    * the keys of :data:`KEYS` are validated;
    * ``hard_neg`` other than ``none`` (set anywhere, a preset included) mixes
      :class:`~recbole_dns.negatives.HardNegatives` into ``model_class``;
    * a distributed run (``local_rank`` set) joins its process group on the CPU (gloo) or GPUs (NCCL).

    ``read_cmd_line=False`` ignores ``sys.argv`` (RecBole always reads it).
    """

    def __init__(
        self,
        model: str | type | None = None,
        dataset: str | None = None,
        config_file_list: list[str] | None = None,
        config_dict: dict | None = None,
        read_cmd_line: bool = True,
    ) -> None:
        self._read_cmd_line = read_cmd_line
        for path in config_file_list or []:
            if not os.path.isfile(path):
                raise ConfigError(f"config file not found: {path}")
        super().__init__(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
        validate_config(self)
        if self["hard_neg"] != "none":  # from any source: the user's keys, a model's YAML or a preset
            self.model_class = with_hard_negatives(self.model_class)

    def _load_cmd_line(self):
        return super()._load_cmd_line() if self._read_cmd_line else {}

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
            if model is None:
                raise ConfigError("config key 'model' is not set: give --model=NAME, a config file or config_dict")
        if dataset is None:
            dataset = self.external_config_dict.get("dataset")
            if dataset is None:
                raise ConfigError("config key 'dataset' is not set: give --dataset=NAME, a config file or config_dict")
        name = model if isinstance(model, str) else model.__name__
        dns = self.external_config_dict.get("dns", None)
        if dns is not None:
            check_key("dns", dns)
        if dns:
            name = models.dns_variant(name)
        elif dns is False and models.is_dns_model(name):
            raise ConfigError(f"dns: false contradicts model {name!r}; use its base model {models.base_of(name)!r}")
        model_class = models.get_model(name) if (isinstance(model, str) or name != model.__name__) else model
        return name, model_class, str(dataset)

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        recbole_props = Path(recbole.__file__).resolve().parent / "properties" / "model"
        files = [PROPERTIES / "overall.yaml", preset_file(PAPER_PRESET)]
        base = models.base_of(model)
        if base is not None:
            files.append(recbole_props / f"{base}.yaml")
            files.append(PROPERTIES / "model" / f"{base}.yaml")
        files.append(PROPERTIES / "model" / f"{model}.yaml")
        dataset_preset = self.external_config_dict.get("dataset_preset", True)
        check_key("dataset_preset", dataset_preset)
        if dataset_preset:
            files.append(PROPERTIES / "dataset" / f"{dataset}.yaml")
        for path in files:
            if path.is_file():
                self._update_internal_config_dict(str(path))
        preset = self.external_config_dict.get("dns_preset")
        if preset is not None:
            check_key("dns_preset", preset)
            if not models.is_dns_model(model):
                raise ConfigError(f"config key 'dns_preset' applies to a _DNS model (or dns: true); model {model!r} is not one")
        else:
            preset = self.internal_config_dict["dns_preset"]  # the model's YAML, else the paper's
        # on top of the paper's keys, after the model's defaults, before the user's keys
        self._update_internal_config_dict(str(preset_file(preset)))
        self.internal_config_dict["dns_preset"] = preset
        if models.is_dns_model(model):
            self.internal_config_dict["dns"] = True

    def _init_device(self):
        """RecBole 1.2.1 hard-codes NCCL and CUDA devices for a distributed run (``local_rank`` set): here gloo
        on the CPU, NCCL on GPUs, with a timeout (:func:`~recbole_dns.parallel.init_process_group`), and the
        distributed shims of :func:`~recbole_dns.shims.distributed_run`."""
        if "local_rank" not in self.final_config_dict or not recbole_is("1.2.1"):
            return super()._init_device()
        distributed_run()
        init_process_group(self.final_config_dict)

    def _get_final_config_dict(self):
        final = super()._get_final_config_dict()
        if models.is_dns_model(self.model):
            final["dns"] = True
        return final
