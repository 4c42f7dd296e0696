"""Safe, resumable checkpoints: tensors and plain Python types only, read with ``weights_only=True``.

RecBole 1.2.1 pickles its whole ``Config`` into every checkpoint and reads it back with ``torch.load``,
which fails on torch >= 2.6 (``weights_only=True`` by default) and would unpickle arbitrary objects.
:class:`CheckpointMixin` writes and reads this package's format instead: the config as a plain dict,
the model's ``state_dict`` and ``other_parameter()`` (a DNS model's pool is there), the optimiser, and
the random number generators' states, so that a resumed run continues as the uninterrupted run would.
"""

from __future__ import annotations

import enum
import os
import random
import uuid
from typing import Any

import numpy as np
import torch
from recbole.utils import get_local_time, set_color

from recbole_dns.parallel import PROCESS_GROUP_KEYS, barrier, broadcast_object, rank_and_world


def to_plain(obj: Any) -> Any:
    """Convert ``obj`` to tensors and plain Python types only (safe for ``weights_only`` loading)."""
    if isinstance(obj, np.generic):  # before float: np.float64 is a float subclass
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return obj
    if isinstance(obj, enum.Enum):
        return obj.name
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, torch.device):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, (int, str)) else k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        seq = [to_plain(v) for v in obj]
        return tuple(seq) if isinstance(obj, tuple) else seq
    return str(obj)


def config_to_dict(config: Any) -> dict:
    """A RecBole Config as a plain dict (what we store instead of the pickled Config object)."""
    final = getattr(config, "final_config_dict", config)
    return to_plain(dict(final))


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """Save a checkpoint made of tensors and plain types (converted by :func:`to_plain`), atomically: a process
    killed while writing leaves the previous file whole."""
    tmp = f"{os.fspath(path)}.{os.getpid()}.tmp"
    torch.save(to_plain(state), tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, device: torch.device | str | None = None) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`, never unpickling arbitrary objects."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # pickle.UnpicklingError from a RecBole-native checkpoint
        raise ValueError(
            f"cannot load checkpoint {str(path)!r} with weights_only=True ({err.__class__.__name__}). "
            "recbole_dns only reads checkpoints it wrote itself (tensors and plain types); "
            "a checkpoint written by plain RecBole pickles its Config and is not loaded."
        ) from None


def unique_checkpoint_name(model_name: str, local_time: str) -> str:
    """``<model>-<time>-<pid>-<random>.pth``: RecBole names files ``<model>-<time>.pth``, which collides
    when two runs start in the same second (concurrent Ray Tune trials)."""
    return f"{model_name}-{local_time}-{os.getpid()}-{uuid.uuid4().hex[:6]}.pth"


def rng_state(generators: dict[str, torch.Generator] | None = None) -> dict:
    """The states of Python's, numpy's and torch's global RNGs (and of named torch generators)."""
    py = random.getstate()
    npy = np.random.get_state()
    return {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [npy[0], torch.from_numpy(npy[1].astype(np.int64)), int(npy[2]), int(npy[3]), float(npy[4])],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }


def set_rng_state(state: dict, generators: dict[str, torch.Generator] | None = None) -> None:
    """Restore what :func:`rng_state` captured (the named generators that are given)."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npy = state["numpy"]
    np.random.set_state((npy[0], npy[1].cpu().numpy().astype(np.uint32), npy[2], npy[3], npy[4]))  # map_location may move it
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    for name, g in (generators or {}).items():
        if name in state.get("generators", {}):
            g.set_state(state["generators"][name].cpu())


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a ``DistributedDataParallel`` wrapper (or the model itself)."""
    return getattr(model, "module", model)


class CheckpointMixin:
    """Put in front of a RecBole ``Trainer`` class: checkpoints without pickled objects.

    Loads with ``torch.load(weights_only=True)`` (the default since torch 2.6) and stores the RNG states
    as well as everything RecBole's checkpoint holds, so a run resumed from a checkpoint continues as
    the uninterrupted run would. File names are unique per process. The training loader's shuffling
    generator is restored when :meth:`fit` first sees the loader (the trainer does not see it before).

    In a distributed run rank 0 writes the checkpoints (RecBole's rule), every rank knows rank 0's file
    name and waits for it before loading the best model; a resumed run restores the random number
    generators on rank 0 only (the file holds rank 0's), and resumes on any number of ranks.
    """

    def __init__(self, config: Any, model: torch.nn.Module) -> None:
        super().__init__(config, model)
        name = unique_checkpoint_name(config["model"], get_local_time())
        self.saved_model_file = broadcast_object(os.path.join(self.checkpoint_dir, name))
        self._loader_rng: dict[str, torch.Generator] = {}
        self._resumed_loader_rng: dict | None = None
        self.last_valid_result: dict | None = None
        self.last_saved_epoch: int | None = None  # epoch of the checkpoint in saved_model_file

    def fit(self, train_data: Any, valid_data: Any = None, verbose: bool = True, saved: bool = True,
            show_progress: bool = False, callback_fn: Any = None) -> tuple[float, dict | None]:
        gen = getattr(train_data, "generator", None)
        self._loader_rng = {"train_loader": gen} if isinstance(gen, torch.Generator) else {}
        if self._resumed_loader_rng is not None:
            for name, g in self._loader_rng.items():
                if name in self._resumed_loader_rng:
                    g.set_state(self._resumed_loader_rng[name].cpu())
            self._resumed_loader_rng = None
        return super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)

    def _valid_epoch(self, valid_data, show_progress=False):
        score, result = super()._valid_epoch(valid_data, show_progress=show_progress)
        self.last_valid_result = result  # RecBole records it as best only after saving the checkpoint
        return score, result

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        model = _unwrap(self.model)
        state = {
            "config": config_to_dict(self.config),
            # what the user gave (files, dict, command line): enough to rebuild the Config; without the
            # process group of a distributed run, so that the checkpoint loads in one process
            "external_config": to_plain({k: v for k, v in getattr(self.config, "external_config_dict", {}).items()
                                         if k not in PROCESS_GROUP_KEYS}),
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": float(self.best_valid_score),
            "best_valid_result": self.last_valid_result or self.best_valid_result,
            "state_dict": model.state_dict(),
            "other_parameter": model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
            "rng_state": rng_state(self._loader_rng),
        }
        save_checkpoint(state, saved_model_file)
        if saved_model_file == self.saved_model_file:
            self.last_saved_epoch = epoch
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    def resume_checkpoint(self, resume_file: str | os.PathLike) -> None:
        resume_file = str(resume_file)
        self.saved_model_file = resume_file
        checkpoint = load_checkpoint(resume_file, self.device)
        saved_model = str(checkpoint["config"].get("model", ""))
        if saved_model.lower() != str(self.config["model"]).lower():
            raise ValueError(
                f"checkpoint {resume_file!r} was written by model {saved_model!r}, "
                f"but this run's model is {self.config['model']!r}"
            )
        self.start_epoch = checkpoint["epoch"] + 1
        self.last_saved_epoch = checkpoint["epoch"]
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.best_valid_result = checkpoint.get("best_valid_result")
        model = _unwrap(self.model)
        model.load_state_dict(checkpoint["state_dict"])
        model.load_other_parameter(checkpoint.get("other_parameter"))
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        for group in self.optimizer.param_groups:  # this run's learning_rate: a resume may lower it
            group["lr"] = self.learning_rate
        state = checkpoint.get("rng_state")
        if state is not None and rank_and_world()[0] == 0:
            set_rng_state(state)
            self._resumed_loader_rng = state.get("generators") or None
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    @torch.no_grad()
    def evaluate(self, eval_data: Any, load_best_model: bool = True, model_file: str | None = None,
                 show_progress: bool = False) -> dict | None:
        if eval_data and load_best_model:
            barrier()  # rank 0 may still be writing it
            checkpoint_file = model_file or self.saved_model_file
            checkpoint = load_checkpoint(checkpoint_file, self.device)
            model = _unwrap(self.model)
            model.load_state_dict(checkpoint["state_dict"])
            model.load_other_parameter(checkpoint.get("other_parameter"))
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)
