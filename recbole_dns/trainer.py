"""Trainers: RecBole's choice for each model, with safe checkpoints, and the epoch hook of DNS models."""

from __future__ import annotations

import functools
from typing import Any

import torch
from recbole.trainer import Trainer
from recbole.utils import ModelType
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_dns.checkpoint import CheckpointMixin, _unwrap
from recbole_dns.dns import DNSModel


class EpochHookMixin:
    """Put in front of a RecBole ``Trainer``: calls ``model.on_epoch_start(epoch)`` before every epoch.

    The trainer only schedules; what happens (a DNS model rebuilds its pool on its own refresh epochs)
    is the model's business, as RecBole's ``NCLTrainer`` calls ``model.e_step()``.
    """

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        model = _unwrap(self.model)
        if model.on_epoch_start(epoch_idx):
            self.logger.debug(f"{type(model).__name__}: epoch-start work done at epoch {epoch_idx}")
        return super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)


class MonitorMixin:
    """Put in front of a RecBole ``Trainer``: per-epoch diagnostics when ``self.monitor`` is set.

    ``prepare`` sets a :class:`~recbole_dns.diagnostics.TrainingMonitor` when ``log_fn_rate`` or
    ``log_entropy`` is on; its figures go to the log and to TensorBoard (``diagnostics/<name>``) after
    every training epoch.
    """

    monitor = None

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        monitor = self.monitor
        if monitor is None:
            return super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        model = _unwrap(self.model)
        base_loss = loss_func or self.model.calculate_loss

        def observed(interaction):
            if model.NEG_ITEM_ID in interaction:
                monitor.observe("static", interaction[model.USER_ID], interaction[model.NEG_ITEM_ID])
            return base_loss(interaction)

        observe_dns = monitor.observe_dns_batch
        observers = getattr(model, "dns_observers", None)
        if observers is not None:
            observers.append(observe_dns)
        try:
            out = super()._train_epoch(train_data, epoch_idx, loss_func=observed, show_progress=show_progress)
        finally:
            if observers is not None:
                observers.remove(observe_dns)
        row = monitor.end_epoch(epoch_idx, model)
        row["train_loss"] = float(sum(out)) if isinstance(out, tuple) else float(out)
        figures = {k: v for k, v in row.items() if k != "epoch"}
        if figures:
            self.logger.info(f"epoch {epoch_idx} diagnostics: " + ", ".join(f"{k} {v:.6g}" for k, v in figures.items()))
            for key, value in figures.items():
                self.tensorboard.add_scalar(f"diagnostics/{key}", value, epoch_idx)
        return out


class DNSTrainer(EpochHookMixin, MonitorMixin, CheckpointMixin, Trainer):
    """RecBole's ``Trainer`` for DNS models: the epoch hook plus safe, resumable checkpoints."""

    def __init__(self, config: Any, model: torch.nn.Module) -> None:
        if not isinstance(_unwrap(model), DNSModel):
            raise TypeError(f"DNSTrainer trains DNS models only; {type(model).__name__} is not one")
        super().__init__(config, model)


@functools.lru_cache(maxsize=None)
def _compose(trainer_cls: type, hook: bool) -> type:
    """``trainer_cls`` with :class:`MonitorMixin`, :class:`CheckpointMixin` (and :class:`EpochHookMixin`) in front."""
    if not issubclass(trainer_cls, Trainer):  # e.g. the decision-tree trainers: no epochs, no checkpoints
        return trainer_cls
    if hook and trainer_cls is Trainer:
        return DNSTrainer
    wanted = ((EpochHookMixin,) if hook else ()) + (MonitorMixin, CheckpointMixin)
    mixins = tuple(m for m in wanted if not issubclass(trainer_cls, m))
    return type(trainer_cls.__name__, (*mixins, trainer_cls), {"__module__": __name__}) if mixins else trainer_cls


def get_trainer(model_type: ModelType, model_name: str, model_class: type | None = None) -> type:
    """RecBole's trainer class for a model (``recbole.utils.get_trainer``), with safe checkpoints in front
    (they load on torch >= 2.6) and, for a DNS model, the epoch hook that rebuilds its pool."""
    hook = model_class is not None and issubclass(model_class, DNSModel)
    return _compose(recbole_get_trainer(model_type, model_name), hook)
