"""Trainers: RecBole's choice for each model, with safe checkpoints, and the epoch hook of DNS models."""

from __future__ import annotations

import functools
import os
import time
from typing import Any

import torch
from recbole.trainer import Trainer
from recbole.utils import ModelType
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_dns.checkpoint import CheckpointMixin, _unwrap
from recbole_dns.dns import DNSModel
from recbole_dns.errors import ConfigError, LossNotFiniteError
from recbole_dns.shims import fused_optimizer_devices


class EpochTimerMixin:
    """Put first in front of a RecBole ``Trainer``: ``self.epoch_times`` gets the wall-clock seconds of every
    training epoch (the epoch-start work, e.g. a DNS pool refresh, included; evaluation not)."""

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if not hasattr(self, "epoch_times"):
            self.epoch_times: list[float] = []
        start = time.perf_counter()
        out = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        self.epoch_times.append(time.perf_counter() - start)
        return out


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


def loss_term_names(model: torch.nn.Module, n_terms: int) -> list[str]:
    """Names of the ``n_terms`` terms ``calculate_loss`` returned: the model's ``loss_terms`` where it
    declares them, else ``loss`` (one term) or ``term i of n``."""
    names = [str(name) for name in getattr(model, "loss_terms", ())][:n_terms]
    if n_terms == 1:
        return names or ["loss"]
    return names + [f"term {i + 1} of {n_terms}" for i in range(len(names), n_terms)]


#: RecBole's ``learner`` values ``fused_optimizer: true`` applies to -> the optimiser with torch's fused kernel
FUSED_LEARNERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


class FusedOptimizerMixin:
    """Put in front of a RecBole ``Trainer``: with ``fused_optimizer: true``, Adam / AdamW run torch's fused kernel
    (one pass over each parameter per step instead of a dozen; the same update up to float32 rounding). On 2 CPU
    threads that roughly halves a BPR epoch on amazon-beauty, whose tables' update is ~40% of a step
    (docs/benchmarks.md, "The optimiser fused"). A resumed run keeps this run's setting, whatever its checkpoint's."""

    def _build_optimizer(self, **kwargs):
        optimizer = super()._build_optimizer(**kwargs)
        if not self.config["fused_optimizer"] or type(optimizer) not in FUSED_LEARNERS.values():
            return optimizer
        devices = fused_optimizer_devices()
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.device.type not in devices or not torch.is_floating_point(p):
                    raise ConfigError(f"fused_optimizer: true, but torch has no fused {type(optimizer).__name__} for "
                                      f"{p.dtype} parameters on {p.device.type} (only floating point ones on "
                                      f"{', '.join(devices)}); set fused_optimizer: false")
        return type(optimizer)([{**group, "foreach": None, "fused": True} for group in optimizer.param_groups])

    def resume_checkpoint(self, resume_file: str | os.PathLike) -> None:
        super().resume_checkpoint(resume_file)
        if type(self.optimizer) not in FUSED_LEARNERS.values():
            return
        fused = bool(self.config["fused_optimizer"])
        for group in self.optimizer.param_groups:  # the checkpoint's groups carry the setting they were saved with
            group["fused"] = fused or None
            if fused:
                group["foreach"] = None
                for param in group["params"]:  # a fused step reads its step count as float32 on the parameter's device
                    state = self.optimizer.state.get(param, {})
                    if "step" in state:
                        state["step"] = state["step"].to(param.device, torch.float32)


class FiniteLossMixin:
    """Put in front of a RecBole ``Trainer``: stop at the first batch whose loss has a nan or infinite term.

    The error names the epoch, the model, the term (:func:`loss_term_names`) and the last checkpoint
    written, which stays on disk (RecBole's own check only says "Training loss is nan", and lets inf pass).
    The batch is checked before its backward pass, so no weight is updated from it.
    """

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        inner = loss_func or self.model.calculate_loss
        self._loss_epoch, batch = epoch_idx, [0]

        def checked(interaction):
            losses = inner(interaction)
            terms = losses if isinstance(losses, tuple) else (losses,)
            sums = torch.stack([t.detach().float().sum() for t in terms])
            if not bool(torch.isfinite(sums).all()):  # one host sync per batch, as RecBole's loss.item()
                names = loss_term_names(_unwrap(self.model), len(terms))
                raise self._not_finite([(n, v) for n, v in zip(names, sums) if not torch.isfinite(v)], batch[0])
            batch[0] += 1
            return losses

        return super()._train_epoch(train_data, epoch_idx, loss_func=checked, show_progress=show_progress)

    def _check_nan(self, loss):
        # the summed loss; reached unchecked only where a trainer passes its own loss_func (e.g. KGTrainer)
        if not bool(torch.isfinite(loss.detach()).all()):
            raise self._not_finite([("loss", loss)], None)

    def _not_finite(self, bad: list, batch: int | None) -> LossNotFiniteError:
        name, value = bad[0]
        value = "nan" if bool(torch.isnan(value.detach()).any()) else "infinite"
        where = f"epoch {getattr(self, '_loss_epoch', '?')}" + (f", batch {batch}" if batch is not None else "")
        model = self.config["model"]
        ckpt = getattr(self, "saved_model_file", None)
        saved_epoch = getattr(self, "last_saved_epoch", None)
        if ckpt and os.path.isfile(ckpt):
            kept = (f"the last good checkpoint, {ckpt} (epoch {saved_epoch}), is kept: resume from it with "
                    f"--resume={ckpt}, with a smaller learning_rate")
        else:
            kept = ("no checkpoint was written before it (one is written after each evaluation that improves "
                    "valid_metric, or after every epoch with eval_step: 0)")
        others = f" (also {', '.join(repr(n) for n, _ in bad[1:])})" if len(bad) > 1 else ""
        return LossNotFiniteError(
            f"{where}: the training loss of {model} is {value} in term {name!r}{others}; training stopped; "
            f"{kept}"
        )


class DNSTrainer(EpochTimerMixin, EpochHookMixin, MonitorMixin, FiniteLossMixin, FusedOptimizerMixin, CheckpointMixin,
                 Trainer):
    """RecBole's ``Trainer`` for DNS models: epoch times, the epoch hook, diagnostics, the stop at a nan /
    infinite loss term, the fused optimiser when asked and safe, resumable checkpoints."""

    def __init__(self, config: Any, model: torch.nn.Module) -> None:
        if not isinstance(_unwrap(model), DNSModel):
            raise TypeError(f"DNSTrainer trains DNS models only; {type(model).__name__} is not one")
        super().__init__(config, model)


@functools.lru_cache(maxsize=None)
def _compose(trainer_cls: type, hook: bool) -> type:
    """``trainer_cls`` with :class:`EpochTimerMixin`, (:class:`EpochHookMixin`,) :class:`MonitorMixin`,
    :class:`FiniteLossMixin`, :class:`FusedOptimizerMixin` and :class:`CheckpointMixin` in front."""
    if not issubclass(trainer_cls, Trainer):  # e.g. the decision-tree trainers: no epochs, no checkpoints
        return trainer_cls
    if hook and trainer_cls is Trainer:
        return DNSTrainer
    wanted = (EpochTimerMixin,) + ((EpochHookMixin,) if hook else ()) + (MonitorMixin, FiniteLossMixin,
                                                                          FusedOptimizerMixin, CheckpointMixin)
    mixins = tuple(m for m in wanted if not issubclass(trainer_cls, m))
    return type(trainer_cls.__name__, (*mixins, trainer_cls), {"__module__": __name__}) if mixins else trainer_cls


def get_trainer(model_type: ModelType, model_name: str, model_class: type | None = None) -> type:
    """RecBole's trainer class for a model (``recbole.utils.get_trainer``), with safe checkpoints in front
    (they load on torch >= 2.6), a stop at the first nan / infinite loss term and, for a DNS model, the
    epoch hook that rebuilds its pool."""
    hook = model_class is not None and issubclass(model_class, DNSModel)
    return _compose(recbole_get_trainer(model_type, model_name), hook)
