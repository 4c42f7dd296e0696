"""One training run of an experiment (:class:`RunSpec`, :func:`train_and_evaluate`), planning an experiment's
runs from its rows, and their results on disk (running many of them: :mod:`.scheduler`)."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import shutil
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

#: training protocols: batch size, epoch budget, evaluation granularity and early stopping
BUDGETS: dict[str, dict[str, Any]] = {
    # a CPU-sized budget: validation every epoch, stop after 5 evaluations without improvement
    "quick": {"train_batch_size": 2048, "epochs": 30, "eval_step": 1, "stopping_step": 5},
    # the paper's (Section 4.2): batch 1000, up to 500 epochs, stop after 50 epochs without improvement
    "paper": {"train_batch_size": 1000, "epochs": 500, "eval_step": 1, "stopping_step": 50},
}

PROTOCOLS = ("full", "sampled", "both")
METRIC_KEYS = ("ndcg@10", "recall@10", "map@10")

#: one row of an experiment's table: model, label, extra config, variant (what the tables group by)
Row = tuple[str, str, dict | None, dict | None]


@dataclass(frozen=True, eq=False)
class RunSpec:
    """Everything that defines one training run; its :attr:`run_id` names its result file (two specs with
    the same id are the same run)."""

    experiment: str
    dataset: str
    model: str
    label: str
    seed: int  # index of the training seed: 0, 1, ...
    config: tuple = ()  # sorted (key, value) pairs for the RecBole config
    protocol: str = "full"
    test_sets: int = 10
    negatives: int = 100
    data_path: str | None = None
    variant: dict = field(default_factory=dict)  # e.g. {"dns_n": 10}: what the tables group by

    def __hash__(self) -> int:
        return hash(self.run_id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunSpec) and other.run_id == self.run_id

    @property
    def config_dict(self) -> dict:
        """The config as a new dict, nested values copied: RecBole fills some in place (it adds ``alpha`` to
        ``train_neg_sample_args``), which must not change the spec or its :attr:`run_id`."""
        return copy.deepcopy(dict(self.config))

    @property
    def run_id(self) -> str:
        payload = json.dumps([self.experiment, self.dataset, self.model, self.label, self.seed, list(self.config),
                              self.protocol, self.test_sets, self.negatives, self.data_path], default=str)
        digest = hashlib.sha1(payload.encode()).hexdigest()[:10]
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in f"{self.dataset}-{self.label}")
        return f"{safe}-s{self.seed}-{digest}"


def base_config(opts: dict) -> dict:
    """The config every run of an experiment starts from: its budget, then ``--set``'s overrides."""
    return {**BUDGETS[opts["budget"]], **opts.get("overrides", {})}


def plan_runs(experiment: str, datasets: list[str], opts: dict, rows: Callable[[str], list[Row]],
              preset: str | None) -> list[RunSpec]:
    """One run per dataset x training seed x row (``rows(dataset)``); a DNS row runs ``preset``
    (:func:`~recbole_dns.config.with_dns_preset`) unless its config names one."""
    from recbole_dns.config import with_dns_preset

    base = base_config(opts)
    specs: list[RunSpec] = []
    for dataset in datasets:
        table = rows(dataset)
        for seed in range(opts["seeds"]):
            for model, label, extra, variant in table:
                config = with_dns_preset(model, {**base, **(extra or {})}, preset)
                specs.append(RunSpec(experiment=experiment, dataset=dataset, model=model, label=label, seed=seed,
                                     config=tuple(sorted(config.items())), protocol=opts["protocol"],
                                     test_sets=opts["test_sets"], negatives=opts["negatives"],
                                     data_path=opts.get("data_path"), variant=variant or {}))
    return specs


def _sampled_sets(test_data: Any, spec: RunSpec, split_seed: int, cache_dir: Path | None):
    """The dataset's sampled test sets, drawn once and cached (identical for every run with these settings)."""
    import torch

    from recbole_dns.evaluation import SampledTestSets

    path = None
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        path = cache_dir / f"{spec.dataset}-split{split_seed}-T{spec.test_sets}-N{spec.negatives}.pt"
        if path.is_file():
            sets = SampledTestSets.__new__(SampledTestSets)
            sets.__dict__.update(torch.load(path, weights_only=True))
            return sets
    sets = SampledTestSets(test_data, spec.test_sets, spec.negatives, seed=split_seed)
    if path is not None:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(dict(sets.__dict__), tmp)
        os.replace(tmp, path)
    return sets


def train_and_evaluate(spec: RunSpec, work_dir: str, progress: Callable[[str], None] = print) -> dict:
    """Train ``spec``'s model, select its best epoch on validation NDCG@10, and test it under the protocol(s).

    Returns a plain dict (JSON-able except the ``per_user`` numpy arrays): test metrics (``full`` and/or
    one entry per sampled test set), the best validation result, per-epoch curves and diagnostics.
    """
    from recbole_dns.checkpoint import load_checkpoint
    from recbole_dns.evaluation import full_ranking
    from recbole_dns.quick_start import fit_and_test, prepare

    work = Path(work_dir)
    config = {"show_progress": False, "state": "WARNING", **spec.config_dict}
    split_seed = int(config.get("seed", 2020))
    config["seed"] = split_seed
    config["train_seed"] = split_seed + 1000 * spec.seed
    config["checkpoint_dir"] = str(work / "checkpoints" / spec.run_id)
    if spec.data_path:
        config["data_path"] = spec.data_path
    cfg, trainer, train_data, valid_data, test_data = prepare(spec.model, spec.dataset, None, config)
    max_epochs = int(cfg["epochs"])
    curve, elapsed_before = resume_run(trainer, Path(config["checkpoint_dir"]))
    if curve:
        progress(f"[{spec.experiment}] {spec.dataset} {spec.label} seed {spec.seed}: resumed after epoch "
                 f"{curve[-1]['epoch'] + 1} (its last validation)")
    start = time.perf_counter() - elapsed_before

    def on_eval(epoch: int, score: float) -> None:
        elapsed = time.perf_counter() - start
        curve.append({"epoch": epoch, "valid_ndcg@10": float(score), "time_s": elapsed})
        save_run_state(trainer, Path(config["checkpoint_dir"]), epoch, curve, elapsed)
        left = elapsed / (epoch + 1) * (max_epochs - epoch - 1)
        progress(f"[{spec.experiment}] {spec.dataset} {spec.label} seed {spec.seed}: epoch {epoch + 1}/{max_epochs} "
                 f"valid ndcg@10 {score:.4f} ({elapsed:.0f} s, at most ~{left:.0f} s left)")

    fitted = fit_and_test(trainer, train_data, valid_data, callback_fn=on_eval)  # tested below, per protocol
    best_score, best_valid = fitted["best_valid_score"], fitted["best_valid_result"]
    train_s = time.perf_counter() - start
    train_times = getattr(trainer, "epoch_times", [])  # recorded by the trainer (EpochTimerMixin)
    checkpoint = load_checkpoint(trainer.saved_model_file, cfg["device"])
    trainer.model.load_state_dict(checkpoint["state_dict"])
    trainer.model.load_other_parameter(checkpoint.get("other_parameter"))
    best_epoch = int(checkpoint["epoch"])
    result: dict[str, Any] = {
        "status": "ok", "run_id": spec.run_id, "spec": asdict(spec), "best_epoch": best_epoch,
        "epochs": len(train_times), "train_s": train_s, "s_per_epoch": float(np.median(train_times)) if train_times else math.nan,
        "valid": {k: float(v) for k, v in (best_valid or {}).items()}, "curve": curve, "tests": [], "per_user": {},
        "n_users": int(train_data._dataset.user_num), "n_items": int(train_data._dataset.item_num),
    }
    if spec.protocol in ("full", "both"):
        metrics, per_user = full_ranking(trainer, test_data)
        result["tests"].append({"protocol": "full", "test_set": 0, **{k: float(metrics[k]) for k in METRIC_KEYS}})
        result["per_user"]["full"] = per_user
    if spec.protocol in ("sampled", "both"):
        sets = _sampled_sets(test_data, spec, split_seed, work / "sampled")
        per_set = sets.evaluate(trainer.model, cfg)
        for t, pu in enumerate(per_set):
            result["tests"].append({"protocol": "sampled", "test_set": t, **{f"{m}@10": v for m, v in pu.mean().items()}})
        result["per_user"]["sampled"] = _average(per_set)
    result["item_norms"] = _item_norms(trainer.model, train_data._dataset)
    result["norm_popularity_spearman"] = result["item_norms"].pop("spearman")
    monitor = trainer.monitor
    if monitor is not None:
        result["diagnostics"] = monitor.history
        result["fn_rates"] = monitor.mean_fn_rates()
        if cfg["log_fn_rate"]:
            from recbole_dns.diagnostics import expected_static_fn_rate, positives_matrix

            result["expected_fn_rate_static"] = expected_static_fn_rate(train_data._dataset, positives_matrix(test_data))
    shutil.rmtree(cfg["checkpoint_dir"], ignore_errors=True)
    _close_log_handlers()
    progress(f"[{spec.experiment}] {spec.dataset} {spec.label} seed {spec.seed}: done in {train_s:.0f} s, best epoch "
             f"{best_epoch}, valid ndcg@10 {best_score:.4f}, " + ", ".join(
                 f"{t['protocol']} test ndcg@10 {t['ndcg@10']:.4f}" for t in result["tests"] if t["test_set"] == 0))
    return result


def _item_norms(model: Any, dataset: Any) -> dict:
    """Each item's norm in the tables the model scores with, its training popularity, and their Spearman rho."""
    import torch
    from scipy import stats

    from recbole_dns.diagnostics import tables_of

    model.eval()
    with torch.no_grad():
        _, items = tables_of(model)
        norms = items.detach().norm(dim=1).cpu().numpy()[1:]
    pop = np.asarray(dataset.inter_matrix(form="csr").sum(axis=0)).ravel()[1:]
    rho = stats.spearmanr(pop, norms).statistic if np.ptp(norms) > 0 else float("nan")
    return {"norm": norms, "popularity": pop, "spearman": float(rho)}


def _average(per_set: list) -> Any:
    """Each user's value averaged over the sampled test sets."""
    from recbole_dns.evaluation import PerUser

    values = {m: np.mean([pu.values[m] for pu in per_set], axis=0) for m in per_set[0].values}
    return PerUser(per_set[0].users, values)


def _close_log_handlers() -> None:
    """RecBole's ``init_logger`` adds a file handler per run and never removes it (RECBOLE-NOTES)."""
    import logging

    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            handler.close()
            root.removeHandler(handler)


# ---- a run interrupted (a session's end, a lost worker) resumes from its last validation ------------------
def save_run_state(trainer: Any, checkpoint_dir: Path, epoch: int, curve: list[dict], elapsed: float) -> None:
    """After a validation: the run's own records (``resume-<epoch>.json``: the curve, the epoch times, the
    diagnostics, the seconds so far, the best checkpoint's file), then the trainer's state at this epoch
    (``resume.pth``; the best epoch's checkpoint stays where the trainer keeps it), each written atomically."""
    from recbole_dns.checkpoint import to_plain

    monitor = trainer.monitor
    state = {"epoch": epoch, "best_file": os.path.basename(trainer.saved_model_file),
             "best_epoch": trainer.last_saved_epoch, "best_valid_result": to_plain(dict(trainer.best_valid_result or {})),
             "curve": curve, "epoch_times": list(getattr(trainer, "epoch_times", [])),
             "monitor": None if monitor is None else monitor.history, "elapsed": elapsed}
    meta = checkpoint_dir / f"resume-{epoch}.json"
    tmp = meta.with_name(f"{meta.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, default=float))
    os.replace(tmp, meta)
    trainer._save_checkpoint(epoch, verbose=False, saved_model_file=str(checkpoint_dir / "resume.pth"))
    for old in checkpoint_dir.glob("resume-*.json"):
        if old != meta:
            old.unlink()


def resume_run(trainer: Any, checkpoint_dir: Path) -> tuple[list[dict], float]:
    """Continue a run from what :func:`save_run_state` left in ``checkpoint_dir`` (nothing there: start from
    scratch). The trainer resumes as from ``--resume`` (weights, pool, optimiser, random number generators),
    then gets back the run's best checkpoint, best validation result, epoch times and diagnostics; returns
    the curve so far and its seconds (what was trained after the last validation is trained again)."""
    pth = checkpoint_dir / "resume.pth"
    if not pth.is_file():
        return [], 0.0
    trainer.resume_checkpoint(str(pth))
    meta = checkpoint_dir / f"resume-{trainer.start_epoch - 1}.json"
    state = json.loads(meta.read_text()) if meta.is_file() else None
    best = checkpoint_dir / state["best_file"] if state else None
    if best is None or not best.is_file():
        raise RuntimeError(f"{pth} has no {meta.name} or best checkpoint beside it: delete {checkpoint_dir} to "
                           "train this run from the start")
    trainer.saved_model_file = str(best)
    trainer.last_saved_epoch = state["best_epoch"]
    trainer.best_valid_result = state["best_valid_result"]
    trainer.epoch_times = list(state["epoch_times"])
    if trainer.monitor is not None and state["monitor"] is not None:
        trainer.monitor.history = state["monitor"]
    return state["curve"], float(state["elapsed"])


def one_line(err: BaseException) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[-1].strip() if lines else ''}"[:300]


def safe_run(spec: RunSpec, work_dir: str, threads: int = 1) -> dict:
    """:func:`train_and_evaluate`, with any error turned into ``{"status": "error", "error": one line}``."""
    import torch

    torch.set_num_threads(max(1, int(threads)))
    try:
        return train_and_evaluate(spec, work_dir)
    except Exception as err:  # noqa: BLE001 - a run's failure is a result, the others go on
        print(f"[{spec.experiment}] {spec.dataset} {spec.label} seed {spec.seed}: ERROR {one_line(err)}", flush=True)
        return {"status": "error", "run_id": spec.run_id, "spec": asdict(spec), "error": one_line(err),
                "traceback": traceback.format_exc()[-4000:]}


# ---- results on disk -------------------------------------------------------------------------------
def result_path(out: Path, spec: RunSpec) -> Path:
    return out / "runs" / f"{spec.run_id}.json"


def save_result(out: Path, result: dict) -> None:
    """``runs/<id>.json`` (and ``runs/<id>.npz`` with the per-user values), written atomically."""
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    per_user = result.pop("per_user", {}) or {}
    items = result.pop("item_norms", None)
    if per_user or items:
        arrays = {} if items is None else {"items__norm": items["norm"], "items__popularity": items["popularity"]}
        for protocol, pu in per_user.items():
            arrays[f"{protocol}__users"] = pu.users
            for metric, values in pu.values.items():
                arrays[f"{protocol}__{metric}"] = values
        tmp = runs / f"{result['run_id']}.tmp.npz"
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, runs / f"{result['run_id']}.npz")
    tmp = runs / f"{result['run_id']}.json.tmp"
    tmp.write_text(json.dumps(result, indent=1, default=str))
    os.replace(tmp, runs / f"{result['run_id']}.json")


def load_result(out: Path, spec: RunSpec) -> dict | None:
    path = result_path(out, spec)
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def finished_ok(out: Path, spec: RunSpec) -> bool:
    """Whether ``spec``'s result is on disk and ok (an errored run is run again)."""
    result = load_result(out, spec)
    return result is not None and result.get("status") == "ok"


def load_per_user(out: Path, run_id: str) -> dict[str, dict[str, np.ndarray]]:
    """``{protocol: {"users": ..., metric: values}}`` of a finished run."""
    path = out / "runs" / f"{run_id}.npz"
    if not path.is_file():
        return {}
    data = np.load(path)
    out_: dict[str, dict[str, np.ndarray]] = {}
    for key in data.files:
        protocol, name = key.split("__", 1)
        out_.setdefault(protocol, {})[name] = data[key]
    return out_
