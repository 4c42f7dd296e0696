"""Trainers: RecBole's, with safe resumable checkpoints, and the DNS trainer."""

from __future__ import annotations

import functools
import importlib
import os
from typing import Any

import torch
from recbole.data.interaction import Interaction
from recbole.trainer import Trainer
from recbole.utils import ModelType, get_local_time, set_color

from recbole_dns import compat
from recbole_dns.dns import DNS_NEG_ITEM_ID, DNSModel, DNSPool


class CheckpointMixin:
    """Checkpoints of tensors and plain types, read with ``weights_only=True``, that resume exactly.

    Mixed in front of any RecBole ``Trainer``: the checkpoint stores the config as a plain dict (never
    a pickled ``Config``), the RNG states (Python, numpy, torch and the training loader's shuffling
    generator) and whatever :meth:`_extra_state` adds, so a run resumed from a checkpoint continues
    as the uninterrupted run would have. File names are unique per process.
    """

    def __init__(self, config: Any, model: torch.nn.Module) -> None:
        super().__init__(config, model)
        name = compat.unique_checkpoint_name(config["model"], get_local_time())
        self.saved_model_file = os.path.join(self.checkpoint_dir, name)
        self._rng_generators: dict[str, torch.Generator] = {}
        self._pending_rng: dict | None = None
        self.last_valid_result: dict | None = None

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        gen = getattr(train_data, "generator", None)
        if isinstance(gen, torch.Generator):
            self._rng_generators = {"train_loader": gen}
        if self._pending_rng is not None:
            compat.set_rng_state(self._pending_rng, self._rng_generators)
            self._pending_rng = None
        return super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)

    def _valid_epoch(self, valid_data, show_progress=False):
        score, result = super()._valid_epoch(valid_data, show_progress=show_progress)
        self.last_valid_result = result  # RecBole records it as best only after saving the checkpoint
        return score, result

    def _extra_state(self) -> dict:
        return {}

    def _load_extra_state(self, checkpoint: dict) -> None:
        pass

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        state = {
            "config": compat.config_to_dict(self.config),
            # what the user gave (files, dict, command line): enough to rebuild the Config
            "external_config": compat.to_plain(getattr(self.config, "external_config_dict", {})),
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": float(self.best_valid_score),
            "best_valid_result": self.last_valid_result or self.best_valid_result,
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
            "rng_state": compat.rng_state(self._rng_generators),
            **self._extra_state(),
        }
        compat.save_checkpoint(state, saved_model_file)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    def resume_checkpoint(self, resume_file):
        resume_file = str(resume_file)
        self.saved_model_file = resume_file
        checkpoint = compat.load_checkpoint(resume_file, self.device)
        saved_model = str(checkpoint["config"].get("model", ""))
        if saved_model.lower() != str(self.config["model"]).lower():
            raise ValueError(
                f"checkpoint {resume_file!r} was written by model {saved_model!r}, "
                f"but this run's model is {self.config['model']!r}"
            )
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.best_valid_result = checkpoint.get("best_valid_result")
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self._pending_rng = checkpoint.get("rng_state")
        self._load_extra_state(checkpoint)
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if eval_data and load_best_model:
            checkpoint_file = model_file or self.saved_model_file
            checkpoint = compat.load_checkpoint(checkpoint_file, self.device)
            self.model.load_state_dict(checkpoint["state_dict"])
            self.model.load_other_parameter(checkpoint.get("other_parameter"))
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)


class DNSTrainer(CheckpointMixin, Trainer):
    """RecBole's Trainer plus the DNS pool.

    At the start of epoch 0 and of every epoch ``e`` with ``e % dns_n == 0`` the pool is rebuilt from
    the model's :meth:`~recbole_dns.dns.DNSModel.dns_tables`; every training batch then gets one
    contrastive negative per instance (field ``dns_neg_item_id``), drawn on the model's device. The
    pool is part of the checkpoint. Early stopping, validation and checkpointing are RecBole's.
    """

    def __init__(self, config: Any, model: torch.nn.Module) -> None:
        if not isinstance(model, DNSModel):
            raise TypeError(f"DNSTrainer trains DNS models only; {type(model).__name__} is not one")
        super().__init__(config, model)
        self.dns_pool: DNSPool | None = None
        self._pending_pool: dict | None = None

    def _ensure_pool(self, train_data) -> DNSPool:
        if self.dns_pool is None:
            self.dns_pool = DNSPool.from_dataset(train_data._dataset, self.config)
            if self._pending_pool is not None:
                self.dns_pool.load_state_dict(self._pending_pool, self.device)
                self._pending_pool = None
        return self.dns_pool

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        pool = self._ensure_pool(train_data)
        if pool.maybe_refresh(self.model, epoch_idx):
            self.logger.debug(f"DNS pool rebuilt at epoch {epoch_idx}")
        base_loss = loss_func or self.model.calculate_loss

        def loss_with_dns_negative(interaction: Interaction):
            users = interaction[self.model.USER_ID]
            interaction.interaction[DNS_NEG_ITEM_ID] = pool.sample(users)
            return base_loss(interaction)

        return super()._train_epoch(train_data, epoch_idx, loss_func=loss_with_dns_negative, show_progress=show_progress)

    def _extra_state(self) -> dict:
        return {"dns_pool": self.dns_pool.state_dict() if self.dns_pool is not None else None}

    def _load_extra_state(self, checkpoint: dict) -> None:
        self._pending_pool = checkpoint.get("dns_pool")
        if self.dns_pool is not None and self._pending_pool is not None:
            self.dns_pool.load_state_dict(self._pending_pool, self.device)
            self._pending_pool = None


@functools.lru_cache(maxsize=None)
def _with_checkpoints(trainer_cls: type) -> type:
    if issubclass(trainer_cls, CheckpointMixin) or not issubclass(trainer_cls, Trainer):
        return trainer_cls
    return type(trainer_cls.__name__, (CheckpointMixin, trainer_cls), {"__module__": __name__})


def get_trainer(model_type: ModelType, model_name: str, model_class: type | None = None) -> type:
    """The trainer class for a model: :class:`DNSTrainer` for DNS models, else RecBole's choice
    (with :class:`CheckpointMixin` in front, so checkpoints load on torch >= 2.6)."""
    if model_class is not None and issubclass(model_class, DNSModel):
        return DNSTrainer
    own = getattr(model_class, "trainer_class", None) if model_class is not None else None
    if own is not None:
        return _with_checkpoints(own)
    try:
        cls = getattr(importlib.import_module("recbole.trainer"), model_name + "Trainer")
    except AttributeError:
        if model_type == ModelType.KNOWLEDGE:
            cls = getattr(importlib.import_module("recbole.trainer"), "KGTrainer")
        elif model_type == ModelType.TRADITIONAL:
            cls = getattr(importlib.import_module("recbole.trainer"), "TraditionalTrainer")
        else:
            cls = Trainer
    return _with_checkpoints(cls)
