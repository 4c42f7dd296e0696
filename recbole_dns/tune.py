"""Ray Tune sweeps of recbole_dns / RecBole models (``tune/sweep.py`` is the command line).

The trainable builds the RecBole config from the trial's parameters (never from ``sys.argv``, where Ray
puts its own flags), reports the validation metric after every evaluation (so ASHA can stop a trial
early) and, at the end, the test metrics of the best epoch. Each trial works in its own trial
directory (checkpoints, logs).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Callable

import yaml

from recbole_dns.figures import figure2
from recbole_dns.tables import write_csv

#: keys of a trial's config that are not RecBole config keys
MODEL_KEY, DATASET_KEY, FILES_KEY = "model", "dataset", "config_files"


# ---- search spaces ------------------------------------------------------------------------------------
def load_space(path: str | os.PathLike) -> dict:
    """Read a search-space YAML: ``params`` (key -> grid / choice / uniform / loguniform / randint),
    ``fixed`` (plain config values) and optional ``search`` (grid | random) and ``num_samples``."""
    with open(path, encoding="utf-8") as f:
        space = yaml.safe_load(f) or {}
    if not isinstance(space.get("params", {}), dict) or not isinstance(space.get("fixed", {}), dict):
        raise ValueError(f"{path}: 'params' and 'fixed' must be mappings")
    return space


def to_param_space(params: dict) -> dict:
    """YAML parameter specs -> Ray Tune search space."""
    from ray import tune

    out = {}
    for key, spec in params.items():
        if not isinstance(spec, dict) or len(spec) != 1:
            raise ValueError(
                f"search space for {key!r} must be one of {{grid: [...]}}, {{choice: [...]}}, "
                f"{{uniform: [lo, hi]}}, {{loguniform: [lo, hi]}}, {{randint: [lo, hi]}}; got {spec!r}"
            )
        (kind, values), = spec.items()
        if kind == "grid":
            out[key] = tune.grid_search(list(values))
        elif kind == "choice":
            out[key] = tune.choice(list(values))
        elif kind in ("uniform", "loguniform", "randint"):
            out[key] = getattr(tune, kind)(*values)
        else:
            raise ValueError(f"unknown search space kind {kind!r} for {key!r} (grid | choice | uniform | loguniform | randint)")
    return out


# ---- the trainable ------------------------------------------------------------------------------------
def train_recbole(config: dict) -> None:
    """Ray Tune function trainable: one RecBole run configured by the trial's ``config``."""
    import torch
    from ray.air import session

    from recbole_dns.quick_start import fit_and_test, prepare

    config = dict(config)
    model, dataset = config.pop(MODEL_KEY), config.pop(DATASET_KEY)
    files = config.pop(FILES_KEY, None) or None
    trial_dir = session.get_trial_dir()
    os.chdir(trial_dir)  # RecBole writes log/ and log_tensorboard/ into the working directory
    config.setdefault("checkpoint_dir", os.path.join(trial_dir, "saved"))
    config.setdefault("show_progress", False)
    cpus = session.get_trial_resources().required_resources.get("CPU", 1)
    torch.set_num_threads(max(1, int(math.ceil(cpus))))  # as many threads as CPUs given to the trial
    cfg, trainer, train_data, valid_data, test_data = prepare(model, dataset, files, config, read_cmd_line=False)
    metric = cfg["valid_metric"].lower()
    state = {"epoch": -1}

    def report(epoch: int, score: float) -> None:
        state["epoch"] = epoch
        result = trainer.last_valid_result or {}
        session.report({f"valid_{k}": v for k, v in result.items()} | {"epoch": epoch, "valid_score": score, "done": False})

    result = fit_and_test(trainer, train_data, valid_data, test_data, callback_fn=report)
    final = {f"valid_{k}": v for k, v in (result["best_valid_result"] or {}).items()}
    final |= {f"test_{k}": v for k, v in (result["test_result"] or {}).items()}
    session.report(final | {"valid_score": result["best_valid_score"], "valid_metric": metric, "epoch": state["epoch"],
                            "done": True})


# ---- the sweep ----------------------------------------------------------------------------------------
def run_sweep(
    model: str,
    dataset: str,
    space: dict,
    out: str | os.PathLike,
    address: str | None = None,
    num_samples: int | None = None,
    max_concurrent: int = 0,
    cpus_per_trial: float = 1,
    gpus_per_trial: float = 0,
    metric: str = "ndcg@10",
    mode: str = "max",
    search: str | None = None,
    asha: bool = False,
    max_retries: int = 1,
    resume: bool = False,
    config_files: list[str] | None = None,
    overrides: dict | None = None,
    trainable: Callable[[dict], None] | None = None,
    verbose: int = 1,
) -> list[dict]:
    """Run (or resume) a sweep and write ``trials.csv``, ``best.yaml`` and, for a ``dns_n x dns_k`` grid,
    ``fig2_ndcg_vs_n.png`` / ``fig2_ndcg_vs_k.png`` into ``out``. Returns the rows of ``trials.csv``."""
    from ray import air, tune
    from ray.tune.schedulers import ASHAScheduler

    from recbole_dns.launcher import init_ray

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    fixed = dict(space.get("fixed", {})) | dict(overrides or {})
    if "data_path" in fixed:  # trials run in their own directories: make the path absolute
        fixed["data_path"] = str(Path(fixed["data_path"]).resolve())
    fixed.setdefault("valid_metric", metric)
    params = to_param_space(space.get("params", {}))
    search = search or space.get("search", "grid")
    if search not in ("grid", "random"):
        raise ValueError(f"search must be grid or random; got {search!r}")
    if search == "random" and any(isinstance(v, dict) and "grid_search" in v for v in params.values()):
        raise ValueError("random search cannot sample a 'grid' parameter: use choice/uniform/... in the space")
    param_space = {MODEL_KEY: model, DATASET_KEY: dataset, FILES_KEY: [str(Path(f).resolve()) for f in config_files or []]}
    param_space |= fixed | params
    key = f"valid_{metric.lower()}"

    init_ray(address, log_to_driver=verbose > 1)
    fn = tune.with_resources(trainable or train_recbole, {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
    reporter = tune.CLIReporter(
        metric_columns={key: metric, "epoch": "epoch", "training_iteration": "evals"},
        parameter_columns=sorted(space.get("params", {})),
        max_report_frequency=30,
    )
    run_config = air.RunConfig(
        name="sweep",
        local_dir=str(out / "ray"),
        failure_config=air.FailureConfig(max_failures=max_retries),
        progress_reporter=reporter,
        verbose=verbose,
    )
    exp_dir = out / "ray" / "sweep"
    if resume:
        if not tune.Tuner.can_restore(exp_dir):
            raise FileNotFoundError(f"no sweep to resume in {exp_dir}")
        tuner = tune.Tuner.restore(str(exp_dir), trainable=fn, resume_unfinished=True, resume_errored=True)
    else:
        tune_config = tune.TuneConfig(
            metric=key,
            mode=mode,
            num_samples=num_samples or int(space.get("num_samples", 1)),
            max_concurrent_trials=max_concurrent or None,
            scheduler=ASHAScheduler(grace_period=2, reduction_factor=2) if asha else None,
        )
        tuner = tune.Tuner(fn, param_space=param_space, tune_config=tune_config, run_config=run_config)
    results = tuner.fit()
    rows = write_results(results, out, key, mode, sorted(space.get("params", {})))
    return rows


def write_results(results: Any, out: Path, key: str, mode: str, param_keys: list[str]) -> list[dict]:
    """``trials.csv`` (parameters, metrics, status), ``best.yaml`` and the n x k plots."""
    rows = []
    for result in results:
        metrics = result.metrics or {}
        row = {"trial_id": metrics.get("trial_id", ""), "status": "ERROR" if result.error else "TERMINATED"}
        row |= {k: (result.config or {}).get(k) for k in param_keys}
        row |= {k: v for k, v in metrics.items() if k.startswith(("valid_", "test_")) and isinstance(v, (int, float))}
        row["epoch_last"] = metrics.get("epoch", "")
        row["error"] = _error_line(result.error)
        rows.append((row, result))
    ok = [(r, res) for r, res in rows if r["status"] == "TERMINATED" and isinstance(r.get(key), (int, float))]
    write_csv(out / "trials.csv", (r for r, _ in rows), ["trial_id", "status", *param_keys])
    if ok:
        best_row, best = (max if mode == "max" else min)(ok, key=lambda x: x[0][key])
        config = {}
        for path in best.config.get(FILES_KEY) or []:  # best.yaml alone must reproduce the trial
            with open(path, encoding="utf-8") as f:
                config |= yaml.safe_load(f) or {}
        config |= {k: v for k, v in best.config.items() if k != FILES_KEY}
        with open(out / "best.yaml", "w", encoding="utf-8") as f:
            f.write(f"# best trial {best_row['trial_id']}: {key} = {best_row[key]}\n")
            yaml.safe_dump(config, f, sort_keys=True)
    if "dns_n" in param_keys and "dns_k" in param_keys and ok:
        plot_n_k([r for r, _ in ok], out, key)
    return [r for r, _ in rows]


def _error_line(error: BaseException | None) -> str:
    """The exception's own line (the last line of Ray's wrapped traceback), without colour codes and without
    the exception's module: ``ConfigError: <message>``."""
    if error is None:
        return ""
    lines = [line for line in re.sub(r"\x1b\[[0-9;]*m", "", str(error)).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return re.sub(r"^(?:[A-Za-z_]\w*\.)+(?=\w+(?:Error|Exception)\b)", "", lines[-1].strip())[:1000]


def plot_n_k(rows: list[dict], out: Path, key: str) -> None:
    """The paper's Figure 2 from a ``dns_n x dns_k`` grid: the test metric of the best epoch (else ``key``)
    against n, one line per k, and against k, one line per n."""
    test_key = key.replace("valid_", "test_")
    label = key.replace("valid_", "test ").replace("ndcg", "NDCG") if any(test_key in r for r in rows) else key
    value = {(r["dns_n"], r["dns_k"]): r.get(test_key, r[key]) for r in rows}
    ns, ks = sorted({n for n, _ in value}), sorted({k for _, k in value})
    figure2(out / "fig2_ndcg_vs_n.png", "dns_n",
            {f"k={k}": [(n, value[n, k]) for n in ns if (n, k) in value] for k in ks}, label)
    figure2(out / "fig2_ndcg_vs_k.png", "dns_k",
            {f"n={n}": [(k, value[n, k]) for k in ks if (n, k) in value] for n in ns}, label)
