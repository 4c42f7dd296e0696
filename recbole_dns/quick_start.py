"""``run_recbole_dns``: RecBole's ``run_recbole`` for this package's models and every built-in one."""

from __future__ import annotations

import sys
from logging import getLogger
from typing import Any, Callable

import torch

from recbole_dns.config import Config
from recbole_dns.errors import ConfigError
from recbole_dns.shims import silence_known_warnings
from recbole_dns.trainer import get_trainer


def _create_dataset(config):
    """RecBole's ``create_dataset`` between this package's checks (:mod:`recbole_dns.checks`): a clear
    error when the atomic files are missing offline, empty or unusable, or when the filters leave nothing."""
    import os
    from urllib.error import URLError

    from recbole.data import create_dataset

    from recbole_dns.checks import check_dataset, no_rows_left

    path = config["data_path"]
    name = config["dataset"]
    hint = (
        f"put the atomic files at {os.path.join(path, name + '.inter')} "
        f"(or pass --data_path=DIR with DIR/{name}/{name}.inter)"
    )
    try:
        dataset = create_dataset(config)
    except (URLError, OSError) as err:
        raise ConfigError(f"dataset '{name}' is not at {path} and could not be downloaded ({err}); {hint}") from None
    except ValueError as err:
        if "a known dataset name" in str(err):
            raise ConfigError(f"dataset '{name}' not found at {path} and not a RecBole dataset name; {hint}") from None
        if "Some feat is empty" in str(err):  # RecBole 1.2.1, Dataset._reset_index
            raise no_rows_left(config) from None
        raise
    check_dataset(config, dataset)
    return dataset


def prepare(
    model: str | None = None,
    dataset: str | None = None,
    config_file_list: list[str] | None = None,
    config_dict: dict | None = None,
    read_cmd_line: bool = False,
) -> tuple[Any, Any, Any, Any, Any]:
    """Config, dataset split, model and trainer, ready to ``fit`` (the first half of :func:`run_recbole_dns`).

    Returns:
        ``(config, trainer, train_data, valid_data, test_data)``.
    """
    config = Config(
        model=model,
        dataset=dataset,
        config_file_list=config_file_list,
        config_dict=config_dict,
        read_cmd_line=read_cmd_line,
    )
    _, model_obj, train_data, valid_data, test_data = _data_and_model(config)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"], config.model_class)(config, model_obj)
    if config["log_fn_rate"] or config["log_entropy"] or config["log_grad_share"]:
        from recbole_dns.diagnostics import TrainingMonitor, positives_matrix

        test_positives = positives_matrix(test_data) if config["log_fn_rate"] else None
        trainer.monitor = TrainingMonitor(test_positives, config["log_entropy"], config["device"],
                                          grad_share=config["log_grad_share"])
    return config, trainer, train_data, valid_data, test_data


def _data_and_model(config):
    """Seed, logger, dataset, split and a fresh model for ``config``, as RecBole's quick start does."""
    from recbole.data import data_preparation
    from recbole.utils import init_logger, init_seed

    from recbole_dns.checks import check_atomic_files

    check_atomic_files(config)  # before the log starts: a bad file is one line
    silence_known_warnings()
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)
    data = _create_dataset(config)
    logger.info(data)
    train_data, valid_data, test_data = data_preparation(config, data)
    # the split above follows `seed`; the model's initialisation and the training order follow `train_seed`
    train_seed = config["seed"] if config["train_seed"] is None else config["train_seed"]
    if train_seed != config["seed"] and isinstance(getattr(train_data, "generator", None), torch.Generator):
        train_data.generator.manual_seed(train_seed)
    init_seed(train_seed + config["local_rank"], config["reproducibility"])
    model = config.model_class(config, train_data._dataset).to(config["device"])
    logger.info(model)
    return data, model, train_data, valid_data, test_data


def run_recbole_dns(
    model: str | None = None,
    dataset: str | None = None,
    config_file_list: list[str] | None = None,
    config_dict: dict | None = None,
    saved: bool = True,
    read_cmd_line: bool = True,
    resume_file: str | None = None,
    callback_fn: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train and test a model, as RecBole's ``run_recbole`` (same arguments and return value).

    Works for this package's models (``BPR_DNS``, ...) and every built-in RecBole model; ``dns: true``
    in the config selects the base model's DNS variant. ``resume_file`` continues a run from one of
    its checkpoints; ``callback_fn(epoch, valid_score)`` is passed to ``Trainer.fit``.

    Returns:
        ``{"best_valid_score", "valid_score_bigger", "best_valid_result", "test_result"}``.
    """
    from recbole.utils import set_color

    config, trainer, train_data, valid_data, test_data = prepare(
        model, dataset, config_file_list, config_dict, read_cmd_line
    )
    logger = getLogger()
    if resume_file:
        trainer.resume_checkpoint(resume_file)
    result = fit_and_test(trainer, train_data, valid_data, test_data, saved=saved,
                          show_progress=config["show_progress"], callback_fn=callback_fn)
    logger.info(set_color("best valid ", "yellow") + f": {result['best_valid_result']}")
    logger.info(set_color("test result", "yellow") + f": {result['test_result']}")
    return result


def fit_and_test(
    trainer: Any,
    train_data: Any,
    valid_data: Any,
    test_data: Any = None,
    saved: bool = True,
    show_progress: bool = False,
    callback_fn: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """``trainer.fit`` (best epoch on ``valid_metric``), then ``trainer.evaluate`` of ``test_data`` at the best
    epoch (the last one without ``saved``); no test without ``test_data``. The core every driver shares.

    Returns:
        ``{"best_valid_score", "valid_score_bigger", "best_valid_result", "test_result"}`` (``run_recbole_dns``'s).
    """
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=show_progress, callback_fn=callback_fn
    )
    test_result = None
    if test_data is not None:
        test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=show_progress)
    return {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": trainer.config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
    }


def load_data_and_model(model_file: str, model: str | None = None) -> tuple:
    """RecBole's ``load_data_and_model`` for checkpoints written by this package.

    Rebuilds the Config from the model, dataset and user-given settings stored in the checkpoint (no
    unpickling), the dataset and its split, and the model with the checkpoint's weights. ``model``
    loads the weights into another model with the same tables, e.g. a ``BPR_DNS`` checkpoint into
    ``BPR`` (a DNS variant's ``state_dict`` is its base's; its pool is left out).

    Returns:
        ``(config, model, dataset, train_data, valid_data, test_data)``.
    """
    from recbole_dns.checkpoint import load_checkpoint
    from recbole_dns.models import is_dns_model

    checkpoint = load_checkpoint(model_file, "cpu")
    saved = checkpoint["config"]
    external = {k: v for k, v in checkpoint.get("external_config", {}).items() if k not in ("model", "dataset")}
    name = model or saved["model"]
    if not is_dns_model(name):
        external.pop("dns", None)
    config = Config(model=name, dataset=saved["dataset"], config_dict=external, read_cmd_line=False)
    dataset, model_obj, train_data, valid_data, test_data = _data_and_model(config)
    model_obj.load_state_dict(checkpoint["state_dict"])
    other = checkpoint.get("other_parameter") or {}
    model_obj.load_other_parameter({k: v for k, v in other.items() if k in model_obj.other_parameter()})
    return config, model_obj, dataset, train_data, valid_data, test_data
