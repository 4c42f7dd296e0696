import os
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _share_the_cores():
    """Each xdist worker gets its share of the cores: two workers with a thread per core each spin OpenMP threads on busy
    cores, which made SGL's and SGL_DNS's training tests take 140-370 s instead of ~10-30 s (docs/benchmarks.md, "The
    refresh's top-k nested"). Set before every test, as a test may change it (the experiments runner sets its own)."""
    import torch

    from recbole_dns.launcher import threads_per_process

    torch.set_num_threads(threads_per_process(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
    yield


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    """RecBole writes log/, log_tensorboard/ and saved/ into the working directory: keep them out of the repo.
    Scripts the tests start find this checkout first on PYTHONPATH, and whatever PYTHONPATH held after it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]))
    yield


FAST = {
    "show_progress": False,
    "state": "WARNING",
    "epochs": 2,
    "train_batch_size": 4096,
    "eval_batch_size": 409600,
    "use_gpu": os.environ.get("RECBOLE_DNS_TEST_GPU", "0") == "1",
}


@pytest.fixture
def prepare():
    """``prepare(model, **config) -> (config, trainer, train, valid, test)`` on the embedded ml-100k."""
    from recbole_dns.config import with_dns_preset
    from recbole_dns.quick_start import prepare as _prepare

    def make(model, dataset="ml-100k", **cfg):
        # the mechanism as the paper has it, from epoch 0 (BPR_DNS ships a warm-up)
        return _prepare(model, dataset, None, with_dns_preset(model, {**FAST, **cfg}), False)

    return make
