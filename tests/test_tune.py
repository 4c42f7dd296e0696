"""Ray Tune sweeps: a quick grid end to end, retries, resume, results, plots, bad input."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recbole_dns import run_recbole_dns
from recbole_dns.tune import load_space, plot_n_k, run_sweep, to_param_space, train_recbole

ROOT = Path(__file__).resolve().parent.parent


def flaky_trainable(config):
    """Trial dns_k=20 fails on its first attempt; trial dns_k=50 fails while BLOCK exists."""
    marks = Path(os.environ["SWEEP_TEST_DIR"])
    with open(marks / f"attempts_{config['dns_k']}", "a") as f:
        f.write("x")
    attempts = (marks / f"attempts_{config['dns_k']}").read_text()
    if config["dns_k"] == 20 and len(attempts) == 1:
        raise RuntimeError("forced failure (first attempt)")
    if config["dns_k"] == 50 and (marks / "BLOCK").exists():
        raise RuntimeError("forced failure (blocked)")
    train_recbole(config)


def _rows(path):
    with open(path) as f:
        return {int(r["dns_k"]): r for r in csv.DictReader(f)}


def test_quick_grid_end_to_end_with_retry_and_resume(tmp_path, monkeypatch):
    marks = tmp_path / "marks"
    marks.mkdir()
    (marks / "BLOCK").touch()
    monkeypatch.setenv("SWEEP_TEST_DIR", str(marks))
    out = tmp_path / "sweep"
    space = load_space(ROOT / "tune" / "spaces" / "quick.yaml")
    kwargs = dict(max_concurrent=2, max_retries=1, trainable=flaky_trainable, verbose=0)
    import ray
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"SWEEP_TEST_DIR": str(marks)}})
    try:
        run_sweep("BPR_DNS", "ml-100k", space, out, **kwargs)
        rows = _rows(out / "trials.csv")
        assert rows[20]["status"] == "TERMINATED"  # failed once, retried, finished
        assert (marks / "attempts_20").read_text() == "xx"
        assert rows[50]["status"] == "ERROR" and "blocked" in rows[50]["error"]
        assert (marks / "attempts_50").read_text() == "xx"  # first try + one retry
        for key in ("valid_ndcg@10", "test_ndcg@10", "test_recall@10", "test_map@10"):
            assert 0 < float(rows[20][key]) <= 1

        # resume: the errored trial runs again, the finished one does not
        (marks / "BLOCK").unlink()
        run_sweep("BPR_DNS", "ml-100k", space, out, resume=True, **kwargs)
        rows = _rows(out / "trials.csv")
        assert rows[50]["status"] == "TERMINATED" and rows[20]["status"] == "TERMINATED"
        assert (marks / "attempts_20").read_text() == "xx"
        assert (marks / "attempts_50").read_text() == "xxx"
    finally:
        ray.shutdown()

    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["model"] == "BPR_DNS" and best["dataset"] == "ml-100k" and best["dns_k"] in (20, 50)
    assert best["epochs"] == 1
    best_k = max(rows, key=lambda k: float(rows[k]["valid_ndcg@10"]))
    assert best["dns_k"] == best_k
    # each trial worked in its own directory
    saved = list((out / "ray" / "sweep").glob("*/saved/*.pth"))
    assert len({p.parent.parent for p in saved}) == 2

    # best.yaml alone reproduces the trial
    result = run_recbole_dns(config_file_list=[str(out / "best.yaml")], model=best["model"], dataset=best["dataset"],
                             config_dict={"state": "WARNING", "show_progress": False}, read_cmd_line=False)
    assert result["test_result"]["ndcg@10"] == pytest.approx(float(rows[best_k]["test_ndcg@10"]), abs=1e-4)


def test_runner_takes_model_and_dataset_from_a_config_file(tmp_path):
    path = tmp_path / "best.yaml"
    path.write_text("model: BPR\ndataset: ml-100k\ndns: true\nepochs: 1\nshow_progress: false\n")
    out = subprocess.run([sys.executable, str(ROOT / "run_recbole_dns.py"), f"--config_files={path}"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "test ndcg@10:" in out.stdout


def test_n_k_plots(tmp_path):
    rows = [{"dns_n": n, "dns_k": k, "valid_ndcg@10": 0.1 + 0.01 * n - 0.001 * k, "test_ndcg@10": 0.1}
            for n in (1, 5, 10) for k in (10, 50)]
    plot_n_k(rows, tmp_path, "valid_ndcg@10")
    for name in ("fig2_ndcg_vs_n.png", "fig2_ndcg_vs_k.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_space_specs():
    from ray import tune

    space = to_param_space({"a": {"grid": [1, 2]}, "b": {"loguniform": [1e-4, 1e-2]}, "c": {"choice": ["x"]}})
    assert space["a"] == tune.grid_search([1, 2])
    assert 1e-4 <= space["b"].sample() <= 1e-2
    with pytest.raises(ValueError, match="search space for 'd' must be one of"):
        to_param_space({"d": [1, 2]})
    with pytest.raises(ValueError, match="unknown search space kind 'normal'"):
        to_param_space({"e": {"normal": [0, 1]}})


@pytest.mark.parametrize("args,message", [
    (["--model=BPRX", "--dataset=ml-100k", "--space=tune/spaces/quick.yaml", "--out=x"], "unknown model 'BPRX'"),
    (["--model=BPR_DNS", "--dataset=ml-100k", "--space=nope.yaml", "--out=x"], "search space not found: nope.yaml"),
    (["--model=BPR_DNS", "--dataset=ml-100k", "--space=tune/spaces/quick.yaml", "--out=x", "--set", "epochs"],
     "--set takes KEY=VALUE"),
])
def test_sweep_command_line_errors(args, message):
    out = subprocess.run([sys.executable, str(ROOT / "tune" / "sweep.py"), *args], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def _free_ports(n):
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _wait_for_port(port, head, timeout=120):
    import socket
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert head.poll() is None, "ray start --head exited"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"Ray head not listening on {port} after {timeout} s")


def test_quick_sweep_on_a_ray_cluster_reports_a_bad_data_trial_and_finishes_the_others(tmp_path):
    """A local Ray head with 2 CPUs (started and stopped here, by its own pid), the quick sweep against it
    with --address, plus a dataset grid where one dataset's .inter file is empty."""
    import shutil
    import signal
    import tempfile

    data = tmp_path / "data"
    (data / "broken").mkdir(parents=True)
    (data / "broken" / "broken.inter").write_text("")
    space = load_space(ROOT / "tune" / "spaces" / "quick.yaml")
    space["params"]["dataset"] = {"grid": ["ml-100k", "broken"]}  # ml-100k is RecBole's own, whatever data_path
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))

    gcs, *others = _free_ports(8)
    names = ["node-manager-port", "object-manager-port", "ray-client-server-port", "dashboard-agent-listen-port",
             "dashboard-agent-grpc-port", "metrics-export-port", "dashboard-port"]
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must stay under 108 bytes
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    log = open(tmp_path / "head.log", "w")
    head = subprocess.Popen(
        [sys.executable, "-c", "from ray.scripts.scripts import main; main()", "start", "--head", "--block",
         "--num-cpus=2", "--num-gpus=0", f"--port={gcs}", "--include-dashboard=false", f"--temp-dir={temp_dir}",
         *(f"--{name}={port}" for name, port in zip(names, others))],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
    )
    try:
        _wait_for_port(gcs, head)
        out = subprocess.run(
            [sys.executable, str(ROOT / "tune" / "sweep.py"), "--model=BPR_DNS", "--dataset=ml-100k",
             f"--space={tmp_path / 'space.yaml'}", f"--out={tmp_path / 'sweep'}", f"--address=127.0.0.1:{gcs}",
             "--max-concurrent=2", "--max-retries=0", "--quiet", "--set", f"data_path={data}"],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=540,
        )
        assert head.poll() is None  # the sweep left the cluster running ...
        # ... and ran its trials there: the head's workers logged into its session folder
        assert list(Path(temp_dir).glob("session_*/logs/worker-*.out"))
    finally:
        head.send_signal(signal.SIGTERM)  # ray start --block stops its own processes on SIGTERM
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-3000:]
    with open(tmp_path / "sweep" / "trials.csv") as f:
        rows = {(r["dataset"], int(r["dns_k"])): r for r in csv.DictReader(f)}
    assert set(rows) == {(d, k) for d in ("ml-100k", "broken") for k in (20, 50)}
    message = (f"{data / 'broken' / 'broken.inter'} is empty: a .inter file needs a header line "
               "(e.g. user_id:token<TAB>item_id:token) and one line per interaction")
    for k in (20, 50):
        assert rows[("ml-100k", k)]["status"] == "TERMINATED" and 0 < float(rows[("ml-100k", k)]["test_ndcg@10"]) <= 1
        assert rows[("broken", k)]["status"] == "ERROR"
        assert rows[("broken", k)]["error"] == f"ConfigError: {message}"
        assert f"(dataset=broken, dns_k={k}) failed: ConfigError: {message}" in out.stdout
    assert "4 trials, 2 failed" in out.stdout
    best = yaml.safe_load((tmp_path / "sweep" / "best.yaml").read_text())
    assert best["dataset"] == "ml-100k"
