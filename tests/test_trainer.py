"""The DNS trainer: refresh schedule, per-batch negatives, checkpoints, resume, end-to-end runs."""

import glob
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from recbole_dns import DNSModel, DNSPool, DNSTrainer, run_recbole_dns
from recbole_dns.sampling import exclusion_matrix

ROOT = Path(__file__).resolve().parent.parent


def _record_refreshes(monkeypatch):
    epochs, pools = [], []
    original = DNSPool.refresh

    def spy(self, user_emb, item_emb, epoch):
        original(self, user_emb, item_emb, epoch)
        epochs.append(epoch)
        pools.append(self.pool.clone())

    monkeypatch.setattr(DNSPool, "refresh", spy)
    return epochs, pools


def test_pool_refreshed_exactly_at_epochs_0_n_2n(prepare, monkeypatch):
    epochs, pools = _record_refreshes(monkeypatch)
    seen = []
    config, trainer, train, valid, test = prepare("BPR_DNS", epochs=7, dns_n=3, dns_k=20, eval_step=0)
    assert isinstance(trainer, DNSTrainer)
    original_epoch = DNSTrainer._train_epoch

    def track(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        out = original_epoch(self, train_data, epoch_idx, loss_func, show_progress)
        seen.append((epoch_idx, self.model.dns_pool.pool.clone()))
        return out

    monkeypatch.setattr(DNSTrainer, "_train_epoch", track)
    trainer.fit(train, None, saved=False)
    assert epochs == [0, 3, 6]
    # the pool in use during an epoch is the one built at the last refresh
    for epoch, pool in seen:
        assert torch.equal(pool, pools[epoch // 3])
    # the model trained between refreshes, so the pool changed
    assert not torch.equal(pools[0], pools[1])


def test_pool_is_the_dissimilar_pool_of_the_current_tables(prepare):
    config, trainer, train, valid, test = prepare("BPR_DNS", dns_k=15)
    assert trainer.model.on_epoch_start(0) and not trainer.model.on_epoch_start(0)  # built once per refresh epoch
    pool = trainer.model.dns_pool
    users, items = (t.detach().cpu() for t in trainer.model.dns_tables())
    exclude = exclusion_matrix(train._dataset).toarray() > 0
    cos = torch.nn.functional.normalize(users, dim=1) @ torch.nn.functional.normalize(items, dim=1).T
    for u in (1, 17, 400, 942):
        allowed = np.flatnonzero(~exclude[u])
        ref = allowed[np.argsort(cos[u, allowed].detach().numpy())[:15]]
        assert set(pool.pool[u].tolist()) == set(ref.tolist())
        assert not exclude[u, pool.pool[u].cpu().numpy()].any()  # never a training positive nor item 0


def test_each_instance_gets_one_negative_from_its_users_pool(prepare, monkeypatch):
    config, trainer, train, valid, test = prepare("BPR_DNS", dns_k=10, epochs=1, eval_step=0)
    model = trainer.model
    batches = []
    original = DNSPool.sample

    def spy(self, users, m=1, items=None):
        negs = original(self, users, m, items)
        batches.append((users.clone(), negs.clone()))
        return negs

    monkeypatch.setattr(DNSPool, "sample", spy)
    trainer.fit(train, None, saved=False)
    pool = model.dns_pool.pool
    total = 0
    for users, negs in batches:
        assert negs.shape == users.shape and negs.device == pool.device
        assert (pool[users] == negs.unsqueeze(1)).any(dim=1).all()
        total += len(users)
    assert total == len(train._dataset)


def test_dns_loss_before_the_first_refresh_says_what_to_call(prepare):
    config, trainer, train, valid, test = prepare("BPR_DNS")
    batch = next(iter(train)).to(train.config["device"])
    with pytest.raises(RuntimeError, match=r"on_epoch_start\(epoch\)"):
        trainer.model.calculate_loss(batch)
    trainer.model.on_epoch_start(0)
    assert torch.isfinite(trainer.model.calculate_loss(batch)[0])


def test_the_trainer_is_only_an_epoch_hook(prepare, monkeypatch):
    """No pool state in the trainer and no field written into the batch: the model draws i'- itself."""
    config, trainer, train, valid, test = prepare("BPR_DNS", epochs=1, eval_step=0)
    seen_fields = []
    original = type(trainer.model).calculate_loss

    def spy(self, interaction):
        seen_fields.append(set(interaction.interaction))
        return original(self, interaction)

    monkeypatch.setattr(type(trainer.model), "calculate_loss", spy)
    trainer.fit(train, None, saved=False)
    assert seen_fields and not any(any(name.startswith("dns") for name in f) for f in seen_fields)
    assert not any(isinstance(v, DNSPool) for v in vars(trainer).values())
    assert isinstance(trainer.model, DNSModel) and trainer.model.dns_pool.refreshes == 1


def _checkpoint(trainer):
    return trainer.saved_model_file


def test_checkpoint_is_weights_only_and_resume_equals_uninterrupted(prepare, tmp_path):
    common = dict(dns_n=3, dns_k=20, eval_step=0, checkpoint_dir=str(tmp_path / "ckpt"))
    # uninterrupted: 5 epochs
    _, full, train, _, _ = prepare("BPR_DNS", epochs=5, **common)
    full.fit(train, None, saved=True)
    # interrupted after epoch 2 (epochs=3 writes its checkpoint at the end of every epoch) ...
    _, first, train, _, _ = prepare("BPR_DNS", epochs=3, **common)
    first.fit(train, None, saved=True)
    ckpt = torch.load(_checkpoint(first), weights_only=True)  # plain types only
    assert isinstance(ckpt["config"], dict) and ckpt["config"]["model"] == "BPR_DNS"
    pool_state = ckpt["other_parameter"]["dns_pool"]
    assert ckpt["epoch"] == 2 and pool_state["built_at"] == 0
    assert torch.equal(pool_state["pool"], first.model.dns_pool.pool)
    assert not any(k.startswith("dns") for k in ckpt["state_dict"])  # the weights are BPR's
    # ... and resumed in a fresh process state for epochs 3..4
    _, resumed, train, _, _ = prepare("BPR_DNS", epochs=5, **common)
    resumed.resume_checkpoint(_checkpoint(first))
    assert resumed.start_epoch == 3
    assert torch.equal(resumed.model.dns_pool.pool, first.model.dns_pool.pool)  # the model holds it at once
    resumed.fit(train, None, saved=True)
    assert resumed.model.dns_pool.built_at == 3 and resumed.model.dns_pool.refreshes == 2
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert torch.equal(full.model.dns_pool.pool, resumed.model.dns_pool.pool)


@pytest.mark.parametrize("model", ["BPR", "BPR_DNS"])
def test_fused_optimizer_runs_the_fused_kernel_and_tracks_the_unfused_run(prepare, model):
    runs = {}
    for fused in (False, True):
        _, trainer, train, _, _ = prepare(model, epochs=2, eval_step=0, dns_n=3, dns_k=20, fused_optimizer=fused)
        assert type(trainer.optimizer) is torch.optim.Adam
        assert [g["fused"] for g in trainer.optimizer.param_groups] == [True if fused else None]
        trainer.fit(train, None, saved=False)
        runs[fused] = trainer.model.state_dict()
    for name, a in runs[False].items():  # the same update, up to float32 rounding, over two epochs
        b = runs[True][name]
        assert torch.allclose(a, b, rtol=0, atol=1e-4), (name, (a - b).abs().max())
        assert not torch.equal(a, b) or name.endswith("bias"), name  # the kernel did run: rounding differs somewhere


def test_fused_optimizer_on_a_device_without_the_kernel_is_a_config_error(prepare, monkeypatch):
    from recbole_dns import trainer
    from recbole_dns.errors import ConfigError
    from recbole_dns.shims import fused_optimizer_devices

    assert "cpu" in fused_optimizer_devices()  # torch 2.13 has the CPU kernel the other tests run
    monkeypatch.setattr(trainer, "fused_optimizer_devices", lambda: ("cuda",))  # as if the CPU had none
    with pytest.raises(ConfigError, match=r"fused_optimizer: true, but torch has no fused Adam for torch.float32 "
                                          r"parameters on cpu \(only floating point ones on cuda\); set fused_optimizer: false"):
        prepare("BPR", epochs=1, fused_optimizer=True)


@pytest.mark.parametrize("first_fused", [True, False])
def test_fused_optimizer_resume_equals_uninterrupted_and_follows_this_runs_setting(prepare, tmp_path, first_fused):
    common = dict(dns_n=3, dns_k=20, eval_step=0, checkpoint_dir=str(tmp_path / "ckpt"), fused_optimizer=True)
    _, full, train, _, _ = prepare("BPR_DNS", epochs=4, **common)
    full.fit(train, None, saved=True)
    _, first, train, _, _ = prepare("BPR_DNS", epochs=2, **{**common, "fused_optimizer": first_fused})
    first.fit(train, None, saved=True)
    _, resumed, train, _, _ = prepare("BPR_DNS", epochs=4, **common)
    resumed.resume_checkpoint(_checkpoint(first))
    assert [g["fused"] for g in resumed.optimizer.param_groups] == [True]  # this run's setting, not the checkpoint's
    resumed.fit(train, None, saved=True)
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        if first_fused:
            assert torch.equal(a, b), name
        else:  # two epochs of the unfused kernel first: the same run up to float32 rounding
            assert torch.allclose(a, b, rtol=0, atol=1e-4), name


def test_resume_between_refreshes_keeps_the_checkpoint_pool(prepare, tmp_path, monkeypatch):
    common = dict(dns_n=4, dns_k=20, eval_step=0, checkpoint_dir=str(tmp_path / "ckpt"))
    _, first, train, _, _ = prepare("BPR_DNS", epochs=2, **common)
    first.fit(train, None, saved=True)
    epochs, _ = _record_refreshes(monkeypatch)
    _, resumed, train, _, _ = prepare("BPR_DNS", epochs=3, **common)
    resumed.resume_checkpoint(_checkpoint(first))
    resumed.fit(train, None, saved=False)
    assert epochs == []  # epoch 2 is not a refresh epoch for n=4: the checkpoint's pool is used
    assert torch.equal(resumed.model.dns_pool.pool, first.model.dns_pool.pool)


def test_resume_with_another_model_is_an_error(prepare, tmp_path):
    _, first, train, _, _ = prepare("BPR", epochs=1, eval_step=0, checkpoint_dir=str(tmp_path))
    first.fit(train, None, saved=True)
    _, other, _, _, _ = prepare("BPR_DNS", epochs=1, checkpoint_dir=str(tmp_path))
    with pytest.raises(ValueError, match="written by model 'BPR'"):
        other.resume_checkpoint(first.saved_model_file)


def test_foreign_pickled_checkpoint_is_refused(tmp_path, prepare):
    path = tmp_path / "foreign.pth"
    import argparse

    torch.save({"state_dict": {}, "config": argparse.Namespace(model="BPR")}, path)  # like RecBole's Config
    _, trainer, _, _, _ = prepare("BPR")
    with pytest.raises(ValueError, match="weights_only=True"):
        trainer.resume_checkpoint(str(path))


def test_two_epoch_end_to_end_run_on_ml_100k():
    result = run_recbole_dns(
        model="BPR",
        dataset="ml-100k",
        config_dict={"dns": True, "epochs": 2, "show_progress": False, "state": "WARNING", "dns_n": 1},
        read_cmd_line=False,
    )
    assert set(result) == {"best_valid_score", "valid_score_bigger", "best_valid_result", "test_result"}
    test = result["test_result"]
    for key in ("ndcg@10", "recall@10", "map@10"):
        assert 0.0 < test[key] <= 1.0
    assert result["best_valid_score"] == result["best_valid_result"]["ndcg@10"]
    assert glob.glob("saved/BPR_DNS-*.pth")


def test_builtin_recbole_model_runs_through_the_runner():
    result = run_recbole_dns(
        model="NeuMF",
        dataset="ml-100k",
        config_dict={"epochs": 1, "show_progress": False, "state": "WARNING"},
        read_cmd_line=False,
    )
    assert result["test_result"]["ndcg@10"] > 0


def test_command_line_script(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "run_recbole_dns.py"), "--epochs=1", "--show_progress=False", "--dns_k=50"],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "test ndcg@10:" in out.stdout and "map@10" in out.stdout


def test_command_line_unknown_model_is_one_clear_line(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "run_recbole_dns.py"), "--model=LightGBMX"],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 2
    assert "unknown model 'LightGBMX'" in out.stderr and "Traceback" not in out.stderr


def test_load_data_and_model_rebuilds_the_trained_model_without_unpickling(tmp_path):
    from recbole_dns import load_data_and_model

    cfg = {"epochs": 1, "show_progress": False, "state": "WARNING", "dns_k": 30, "embedding_size": 16,
           "checkpoint_dir": str(tmp_path)}
    result = run_recbole_dns(model="BPR", dataset="ml-100k", config_dict={**cfg, "dns": True}, read_cmd_line=False)
    (path,) = glob.glob(str(tmp_path / "BPR_DNS-*.pth"))
    config, model, dataset, train, valid, test = load_data_and_model(path)
    assert config["model"] == "BPR_DNS" and config["embedding_size"] == 16 and config["dns_k"] == 30
    saved = torch.load(path, weights_only=True)["state_dict"]
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    from recbole_dns.trainer import get_trainer

    trainer = get_trainer(config["MODEL_TYPE"], config["model"], config.model_class)(config, model)
    again = trainer.evaluate(test, load_best_model=False)
    assert again["ndcg@10"] == pytest.approx(result["test_result"]["ndcg@10"], abs=1e-4)
