"""Checks of a dataset before training: each problem is one :class:`ConfigError` line naming the file or
key and the fix, instead of a RecBole traceback (in its parser, its sampler or, after training, in
evaluation).

* :func:`check_atomic_files` - before RecBole reads the files: the ``.inter`` file is there, not empty,
  has a ``NAME:TYPE`` header with the user and item fields, and at least one row; the fields a dataset
  preset of this package (``properties/dataset/<name>.yaml``) names are in the files;
* :func:`no_rows_left` - the error for a dataset that RecBole's filters emptied;
* :func:`check_dataset` - after loading and filtering: ``topk`` / ``valid_metric`` cut-offs against the
  catalogue, and users left with no item to sample as a negative.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np
import yaml

from recbole_dns.defaults import PROPERTIES
from recbole_dns.errors import ConfigError

#: RecBole's atomic-file column types (``recbole.utils.FeatureType``)
FIELD_TYPES = ("token", "token_seq", "float", "float_seq")
#: RecBole's interaction filters, in the order it applies them
FILTER_KEYS = ("rm_dup_inter", "val_interval", "user_inter_num_interval", "item_inter_num_interval")


def inter_files(config: Any) -> list[str]:
    """The ``.inter`` files RecBole reads for ``config``: ``NAME.inter``, or ``NAME.<part>.inter`` for
    each part of ``benchmark_filename``."""
    path, name = config["data_path"], config["dataset"]
    parts = config["benchmark_filename"]
    names = [f"{name}.{part}.inter" for part in parts] if parts else [f"{name}.inter"]
    return [os.path.normpath(os.path.join(path, n)) for n in names]


def _example_header(config: Any) -> str:
    sep = config["field_separator"]
    sep = "<TAB>" if sep == "\t" else sep
    return f"{config['USER_ID_FIELD']}:token{sep}{config['ITEM_ID_FIELD']}:token"


def check_atomic_files(config: Any) -> None:
    """Raise :class:`ConfigError` for a missing or empty ``.inter`` file, a header that RecBole cannot
    parse or that lacks the user / item field, or a file without rows.

    A dataset folder that does not exist is left to RecBole (it downloads the datasets it knows).
    """
    if not os.path.isdir(config["data_path"]):
        return
    sep, encoding = config["field_separator"], config["encoding"]
    uid, iid = config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]
    for path in inter_files(config):
        if not os.path.isfile(path):
            raise ConfigError(
                f"{path} not found: put the dataset's interactions there (a RecBole atomic file whose "
                f"header is e.g. {_example_header(config)})"
            )
        with open(path, encoding=encoding) as f:
            header = f.readline()
            row = next((line for line in f if line.strip()), None)
        if not header.strip():
            raise ConfigError(
                f"{path} is empty: a .inter file needs a header line (e.g. {_example_header(config)}) "
                f"and one line per interaction"
            )
        fields = header.rstrip("\n").split(sep)
        for field in fields:
            name, colon, ftype = field.partition(":")
            if not colon or ftype not in FIELD_TYPES:
                raise ConfigError(
                    f"{path}: header field {field!r} is not NAME:TYPE with TYPE one of {', '.join(FIELD_TYPES)} "
                    f"(fields are separated by field_separator={sep!r})"
                )
        names = [field.partition(":")[0] for field in fields]
        missing = [f for f in (uid, iid) if f not in names]
        if missing:
            raise ConfigError(
                f"{path}: the header has no {' and no '.join(missing)} field; RecBole expects {uid}:token and "
                f"{iid}:token (or set USER_ID_FIELD / ITEM_ID_FIELD to your names); found {', '.join(fields)}"
            )
        if row is None:
            raise ConfigError(f"{path} has a header and no rows: add one line per interaction")
    check_preset_fields(config)


def _header_fields(path: str, config: Any) -> list[str]:
    with open(path, encoding=config["encoding"]) as f:
        header = f.readline().rstrip("\n")
    return [field.partition(":")[0] for field in header.split(config["field_separator"]) if field]


def check_preset_fields(config: Any) -> None:
    """Raise :class:`ConfigError` when this package's preset for the dataset (``properties/dataset/NAME.yaml``,
    e.g. ml-1m's filter on ``rating``) names a field its atomic files lack, unless the user's config replaced
    that key. The message names the preset, the key, the field and how to switch the preset off."""
    preset = PROPERTIES / "dataset" / f"{config['dataset']}.yaml"
    if not config["dataset_preset"] or not preset.is_file():
        return
    files = {suffix: os.path.join(config["data_path"], f"{config['dataset']}.{suffix}") for suffix in ("inter", "user", "item")}
    headers = {s: _header_fields(p, config) for s, p in files.items() if os.path.isfile(p)}
    if config["benchmark_filename"] or "inter" not in headers:
        return
    loaded = sorted({f for fields in headers.values() for f in fields})
    for key, value in (yaml.safe_load(preset.read_text()) or {}).items():
        if config[key] != value:
            continue  # the user's config replaced the preset's value
        if key in ("load_col", "unused_col") and isinstance(value, dict):
            needs = [(f, suffix) for suffix, fields in value.items() if suffix in headers for f in fields or []]
        elif key == "val_interval" and isinstance(value, dict):
            needs = [(f, None) for f in value]
        elif key.endswith("_FIELD") and isinstance(value, str):
            needs = [(value, None)]
        else:
            continue
        for field, suffix in needs:
            have = headers[suffix] if suffix else loaded
            if field not in have:
                where = files[suffix] if suffix else ", ".join(files[s] for s in headers)
                raise ConfigError(
                    f"dataset preset {preset} sets '{key}', which needs field '{field}'; {where} has only "
                    f"{', '.join(have)}: switch the preset off with --dataset_preset=false (dataset_preset: false "
                    f"in a config file), or add the field"
                )


def no_rows_left(config: Any) -> ConfigError:
    """The error for RecBole's "Some feat is empty": its filters removed every interaction."""
    files = inter_files(config)
    rows = 0
    for path in files:
        with open(path, encoding=config["encoding"]) as f:
            rows += sum(1 for line in f if line.strip()) - 1
    default = (None, "[0,inf)")
    set_filters = [f"{key}={config[key]!r}" for key in FILTER_KEYS if config[key] not in default]
    loosen = ", ".join(set_filters) if set_filters else " / ".join(FILTER_KEYS)
    return ConfigError(
        f"no interactions of dataset '{config['dataset']}' are left after RecBole's filters "
        f"({', '.join(files)} has {rows} rows): loosen {loosen}"
    )


def _cutoffs(config: Any) -> list[int]:
    topk = config["topk"]
    return [] if topk is None else [int(topk)] if isinstance(topk, int) else [int(k) for k in topk]


def check_topk(config: Any, n_items: int) -> None:
    """``topk`` cut-offs must not exceed the catalogue, and ``valid_metric``'s cut-off must be one of them."""
    cutoffs = _cutoffs(config)
    too_big = [k for k in cutoffs if k > n_items]
    if too_big:
        k = min(n_items, 10)
        raise ConfigError(
            f"config key 'topk' has cut-off {max(too_big)}, larger than the {n_items} items of dataset "
            f"'{config['dataset']}': use cut-offs of at most {n_items} (e.g. topk: [{k}] with valid_metric: NDCG@{k})"
        )
    metric = str(config["valid_metric"] or "")
    match = re.fullmatch(r"(\w+)@(\d+)", metric.strip())
    if cutoffs and match and int(match.group(2)) not in cutoffs:
        raise ConfigError(
            f"config key 'valid_metric' is {metric} but topk is {cutoffs}: use a cut-off from topk, "
            f"e.g. valid_metric: {match.group(1)}@{cutoffs[0]}"
        )


def _samples_negatives(config: Any) -> bool:
    """Whether RecBole builds its (non-repeatable) negative sampler, which needs a free item per user."""
    if config["repeatable"]:
        return False
    args = (config["train_neg_sample_args"], config["valid_neg_sample_args"], config["test_neg_sample_args"])
    return any((a or {}).get("distribution", "none") not in (None, "none") for a in args)


def check_negatives_left(config: Any, dataset: Any) -> None:
    """Raise :class:`ConfigError` if some user interacted with every item: no negative is left to sample."""
    n_items = dataset.item_num - 1  # RecBole's item 0 is padding
    users = np.asarray(dataset.inter_feat[dataset.uid_field], dtype=np.int64)
    counts = np.bincount(users, minlength=dataset.user_num)
    heavy = np.flatnonzero(counts >= n_items)  # only these can have every item: count distinct pairs for them
    if heavy.size == 0:
        return
    items = np.asarray(dataset.inter_feat[dataset.iid_field], dtype=np.int64)
    keep = np.isin(users, heavy)
    pairs = np.unique(users[keep] * dataset.item_num + items[keep])
    distinct = np.bincount(pairs // dataset.item_num, minlength=dataset.user_num)
    full = np.flatnonzero(distinct >= n_items)
    if full.size == 0:
        return
    example = dataset.id2token(dataset.uid_field, int(full[0]))
    interval = config["user_inter_num_interval"]
    low = str(interval).split(",")[0] if interval else "[0"
    raise ConfigError(
        f"{full.size} user(s) of dataset '{config['dataset']}' (e.g. user {example!s}) interacted with all "
        f"{n_items} items: no negative item is left to sample for them; drop them with "
        f"user_inter_num_interval: \"{low},{n_items})\" (users with {n_items} or more interactions are left out)"
    )


def check_dataset(config: Any, dataset: Any) -> None:
    """The checks that need the loaded, filtered dataset (before it is split and sampled)."""
    check_topk(config, dataset.item_num - 1)
    from recbole_dns.dns import DNSModel

    model_class = getattr(config, "model_class", None)
    dns = isinstance(model_class, type) and issubclass(model_class, DNSModel)  # its pool needs negatives too
    if dns or _samples_negatives(config):
        check_negatives_left(config, dataset)
