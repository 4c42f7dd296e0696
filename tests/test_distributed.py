"""Distributed training (torch DDP over gloo): the sharded pool refresh, 2-process runs on ml-100k, failures.

The process tests spawn 2 CPU processes each (about 60 s in all on 2 cores).
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.distributed as dist

from recbole_dns import DNSPool, build_pool, load_data_and_model
from recbole_dns.dns import index_pool
from recbole_dns.errors import DistributedError
from recbole_dns.launcher import free_port, report_errors, spawn
from recbole_dns.parallel import shard_bounds

ROOT = Path(__file__).resolve().parent.parent


def _random_tables(n_users=53, n_items=40, d=8, seed=0):
    rng = np.random.default_rng(seed)
    user = torch.from_numpy(rng.normal(size=(n_users, d)).astype(np.float32))
    item = torch.from_numpy(rng.normal(size=(n_items, d)).astype(np.float32))
    mask = rng.random((n_users, n_items)) < 0.3
    mask[:, 0] = True  # RecBole's padding item
    mask[3, : n_items - 5] = True  # a user with fewer allowed items than k: the wrap-around path
    return user, item, sp.csr_matrix(mask.astype(np.float32))


# ---- sharding, without processes -------------------------------------------------------------------


@pytest.mark.parametrize("n,world", [(10, 3), (3, 5), (53, 2), (0, 2), (7, 7)])
def test_shard_bounds_partition_the_rows_in_order(n, world):
    bounds = [shard_bounds(n, world, r) for r in range(world)]
    assert [i for s, e in bounds for i in range(s, e)] == list(range(n))
    sizes = [e - s for s, e in bounds]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.filterwarnings("ignore:build_pool")
@pytest.mark.parametrize("sampler", ["dissimilar", "similar"])
@pytest.mark.parametrize("world", [2, 3, 60])
@pytest.mark.parametrize("skip", [0, 7])
def test_shards_concatenate_to_the_unsharded_pool(sampler, world, skip):
    user, item, exclude = _random_tables()
    pool = DNSPool(exclude, n=1, k=12, sampler=sampler, memory_mb=8 * 40 * 5 / 2**20, skip=skip)  # 5 users per chunk
    whole = build_pool(user, item, exclude, 12, sampler, chunk_size=10**6, skip=skip)
    shards = [pool.build_shard(user, item, rank, world) for rank in range(world)]
    assert [len(s) for s in shards] == [e - s for s, e in (shard_bounds(53, world, r) for r in range(world))]
    # the same items in every row; with skip 0 a row's order may differ (an unordered top-k, unless a shard holds a
    # user short of k allowed items), so rows are compared sorted
    assert torch.equal(torch.cat(shards).sort(1).values, whole.sort(1).values)
    pool.refresh(user, item, 0)  # no process group: one shard of everything
    assert torch.equal(pool.pool.sort(1).values, whole.sort(1).values)


@pytest.mark.filterwarnings("ignore:build_pool")
def test_random_shards_are_valid_and_follow_their_generator():
    user, item, exclude = _random_tables()
    pool = DNSPool(exclude, n=1, k=12, sampler="random")

    def shards(seed):
        out = []
        for rank in range(3):
            g = torch.Generator().manual_seed(seed + rank)
            out.append(pool.build_shard(user, item, rank, 3, g))
        return torch.cat(out)

    a, b, c = shards(5), shards(5), shards(6)
    assert torch.equal(a, b) and not torch.equal(a, c)
    dense = exclude.toarray()
    for u, row in enumerate(a.tolist()):
        allowed = int((dense[u] == 0).sum())
        assert all(dense[u, i] == 0 for i in row)
        assert len(set(row)) == min(12, allowed)


# ---- 2 processes (gloo) on ml-100k -------------------------------------------------------------------


def _ddp_config(rank: int, nproc: int, port: int) -> dict:
    return {"show_progress": False, "state": "WARNING", "train_batch_size": 4096, "eval_batch_size": 409600,
            "use_gpu": False, "world_size": nproc, "nproc": nproc, "ip": "localhost", "port": port, "offset": 0,
            "local_rank": rank}


def _gather(t: torch.Tensor) -> list[np.ndarray]:
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return [p.numpy() for p in parts]


def _train_two_models(rank, nproc, port, queue):
    """Each rank: train BPR_DNS and LightGCN_DNS for 2 epochs (pool rebuilt every epoch), then report
    every rank's pool and parameters, the tables, a fresh sharded refresh and rank 0's checkpoint."""
    from recbole_dns.quick_start import prepare

    torch.set_num_threads(1)
    out = {}
    with report_errors(rank, queue):
        for model in ("BPR_DNS", "LightGCN_DNS"):
            cfg = {**_ddp_config(rank, nproc, port), "epochs": 2, "dns_n": 1, "dns_k": 50, "eval_step": 0,
                   "dns_preset": "paper"}  # a pool from epoch 0 (BPR_DNS ships a warm-up)
            config, trainer, train, valid, test = prepare(model, "ml-100k", None, cfg, False)
            assert config["device"].type == "cpu" and dist.get_backend() == "gloo"
            trainer.fit(train, valid, saved=True)
            test_result = trainer.evaluate(test, load_best_model=True)
            m = trainer.model
            trained_pool = m.dns_pool.pool.clone()  # built at the start of epoch 1, across the ranks
            with torch.no_grad():
                users, items = m.dns_tables()
            m.dns_pool.refresh(users, items, 2)
            refreshed = m.dns_pool.pool.clone()
            m.dns_pool.index = "ivf"  # the same refresh through the index: each rank queries its users
            m.dns_pool.refresh(users, items, 3)
            params = torch.cat([p.detach().flatten() for p in m.parameters()])
            out[model] = {
                "trained_pools": _gather(trained_pool),
                "refreshed_pools": _gather(refreshed),
                "ivf_pools": _gather(m.dns_pool.pool),
                "params": _gather(params),
                "users": users.detach().numpy(), "items": items.detach().numpy(), "exclude": m.dns_pool.exclude,
                "checkpoint": os.path.abspath(trainer.saved_model_file),
                "test_result": dict(test_result),
            }
    if rank == 0:
        queue.put(("result", rank, out))


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("ddp"))
    try:
        yield spawn(_train_two_models, 2, (free_port(),))[0]
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("model", ["BPR_DNS", "LightGCN_DNS"])
def test_two_processes_agree_on_pool_and_weights(two_process_run, model):
    run = two_process_run[model]
    a, b = run["params"]
    assert np.array_equal(a, b), "gradients were not all-reduced: the ranks' weights differ"
    for pools in (run["trained_pools"], run["refreshed_pools"]):
        assert np.array_equal(pools[0], pools[1])
    # the sharded refresh holds a one-process build's items, row by row (in no particular order: dns_skip is 0)
    single = build_pool(torch.from_numpy(run["users"]), torch.from_numpy(run["items"]), run["exclude"], 50)
    assert np.array_equal(np.sort(run["refreshed_pools"][0], 1), np.sort(single.numpy(), 1))
    # through the index too: the ranks' gathered shards are the one-process index pool (the same items in every
    # row; their order may differ where two scores tie in float32, since a BLAS rounds a product of a shard's users
    # and of all users in the last bit differently)
    assert np.array_equal(run["ivf_pools"][0], run["ivf_pools"][1])
    single_ivf = index_pool(torch.from_numpy(run["users"]), torch.from_numpy(run["items"]), run["exclude"], 50)
    assert np.array_equal(np.sort(run["ivf_pools"][0], 1), np.sort(single_ivf.numpy(), 1))
    assert set(run["test_result"]) >= {"ndcg@10", "recall@10"} and run["test_result"]["ndcg@10"] > 0


def test_checkpoint_of_two_processes_resumes_in_one(two_process_run, prepare):
    model = "LightGCN_DNS"
    run = two_process_run[model]
    ckpt = torch.load(run["checkpoint"], weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["config"]["world_size"] == 2
    _, trainer, train, valid, _ = prepare(model, epochs=3, dns_n=1, dns_k=50, eval_step=0)
    trainer.resume_checkpoint(run["checkpoint"])
    assert trainer.start_epoch == 2
    assert np.array_equal(torch.cat([p.detach().flatten() for p in trainer.model.parameters()]).cpu().numpy(),
                          run["params"][0])
    assert np.array_equal(trainer.model.dns_pool.pool.cpu().numpy(), run["trained_pools"][0])
    trainer.fit(train, valid, saved=False)
    trainer.tensorboard.close()
    assert trainer.model.dns_pool.built_at == 2  # trained on, one process, with its own refresh
    config, loaded, *_ = load_data_and_model(run["checkpoint"])  # no process group to join
    assert config["single_spec"] and np.array_equal(loaded.dns_pool.pool.cpu().numpy(), run["trained_pools"][0])


def test_command_line_two_processes(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "run_recbole_dns.py"), "--nproc=2", f"--port={free_port()}", "--epochs=1",
         "--show_progress=False", "--dns_k=50", "--use_gpu=False"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "test ndcg@10:" in out.stdout
    assert len(list((tmp_path / "saved").glob("BPR_DNS-*.pth"))) == 1  # rank 0 writes it


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--nproc=0"], "--nproc must be an integer >= 1; got 0"),
        (["--nproc=2", "--world_size=1"], "--group_offset (0) + --nproc (2) must be at most --world_size (1)"),
        (["--nproc=2", "--dns_k=0"], "config key 'dns_k' must be an integer >= 1 or a share of the items in (0, 1); got 0"),
    ],
)
def test_command_line_bad_distributed_flags_are_one_line(monkeypatch, capsys, flags, message):
    from recbole_dns.cli import main

    monkeypatch.setattr("sys.argv", ["run_recbole_dns.py", *flags])  # RecBole reads --key=value from sys.argv
    with pytest.raises(SystemExit) as exit_info:
        main(flags)  # stops before any process starts
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


# ---- a rank that fails, dies or hangs ---------------------------------------------------------------


def _join(rank, nproc, port, timeout):
    from recbole_dns.parallel import init_process_group

    init_process_group({"gpu_id": "", "use_gpu": False, "local_rank": rank, "nproc": nproc, "world_size": nproc,
                        "ip": "localhost", "port": port, "offset": 0, "dist_timeout": timeout})


def _rank_1_fails(rank, nproc, port, queue):
    with report_errors(rank, queue):
        _join(rank, nproc, port, 60)
        if rank == 1:
            raise ValueError("boom on purpose")
        dist.barrier()  # rank 0 waits for a rank that will never come


def _rank_1_hangs(rank, nproc, port, queue):
    with report_errors(rank, queue):
        _join(rank, nproc, port, 3)
        if rank == 1:
            time.sleep(120)
        dist.all_reduce(torch.ones(1))


def test_a_failing_rank_ends_the_run_with_its_error():
    start = time.monotonic()
    with pytest.raises(DistributedError, match=r"^rank 1 failed: ValueError: boom on purpose$"):
        spawn(_rank_1_fails, 2, (free_port(),))
    assert time.monotonic() - start < 60


def test_a_hanging_rank_times_out_instead_of_hanging():
    start = time.monotonic()
    with pytest.raises(DistributedError, match=r"^rank 0 failed: .*(timed out|Timed out|timeout)"):
        spawn(_rank_1_hangs, 2, (free_port(),))
    assert time.monotonic() - start < 60


def test_ranks_creating_the_same_folder_at_once_do_not_fail(tmp_path, monkeypatch):
    """RecBole 1.2.1's ensure_dir races between ranks (exists, then makedirs): the shim of a distributed run
    does not; a one-process run keeps RecBole's own."""
    import recbole.trainer.trainer as recbole_trainer
    import recbole.utils.logger as recbole_logger

    from recbole_dns.shims import distributed_run

    modules = (recbole_logger, recbole_trainer)
    for module in modules:  # restored after the test
        monkeypatch.setattr(module, "ensure_dir", module.ensure_dir)
        assert module.ensure_dir.__module__ == "recbole.utils.utils"  # not applied at import
    distributed_run()
    folder = tmp_path / "log"
    folder.mkdir()
    monkeypatch.setattr("os.path.exists", lambda path: False)  # the other rank created it in between
    for module in modules:
        module.ensure_dir(str(folder))
    assert folder.is_dir()
