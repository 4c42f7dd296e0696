"""Hard negatives for any pairwise model (DNS(M,N), AHNS), each against a brute-force reference."""

import math

import pytest
import torch

from recbole_dns import Config, ConfigError
from recbole_dns import negatives
from recbole_dns.negatives import HardNegatives, ahns_pick, candidate_scores, dns_mn_pick, resolve_hard_neg_m


def _ahns_brute(pos, cands, alpha, beta, p):
    out = []
    for s_pos, row in zip(pos.tolist(), cands.tolist()):
        try:
            target = beta * (s_pos + alpha) ** (p + 1)
        except ZeroDivisionError:
            target = math.inf
        if isinstance(target, complex):
            out.append(0)
            continue
        dist = [abs(s - target) for s in row]
        out.append(min(range(len(row)), key=lambda j: (dist[j], j)))
    return out


@pytest.mark.parametrize("block_bytes", [1, 3 * 5 * 4 * 4, 2**19])  # one row per block, blocks of 3 rows (7 = 3+3+1), one block
def test_candidate_scores_are_the_inner_products_of_each_users_candidates(monkeypatch, block_bytes):
    monkeypatch.setattr(negatives, "CPU_BLOCK_BYTES", block_bytes)
    gen = torch.Generator().manual_seed(0)
    users, items = torch.randn(7, 4, generator=gen), torch.randn(11, 4, generator=gen)
    cands = torch.randint(0, 11, (7, 5), generator=gen)
    brute = torch.tensor([[float(users[b] @ items[cands[b, j]]) for j in range(5)] for b in range(7)])
    assert torch.allclose(candidate_scores(users, items, cands), brute, atol=1e-6)


@pytest.mark.parametrize("alpha,beta,p", [(1.0, 0.1, -2), (0.5, 1.0, 0), (2.0, 0.3, -2.5)])
def test_ahns_picks_the_candidate_closest_to_its_target(alpha, beta, p):
    g = torch.Generator().manual_seed(0)
    pos, cands = torch.randn(300, generator=g, dtype=torch.float64), torch.randn(300, 16, generator=g, dtype=torch.float64)
    assert ahns_pick(pos, cands, alpha, beta, p).tolist() == _ahns_brute(pos, cands, alpha, beta, p)


def test_ahns_target_falls_as_the_positive_score_rises():
    cands = torch.linspace(-1, 1, 201).expand(3, -1)
    picked = cands[0, ahns_pick(torch.tensor([0.0, 1.0, 4.0]), cands, 1.0, 0.5, -2)]
    assert picked.tolist() == pytest.approx([0.5, 0.25, 0.1], abs=1e-6)


def test_dns_mn_picks_uniformly_among_the_n_highest():
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(40, 12, generator=g)
    top = [set(sorted(range(12), key=lambda j: -scores[b, j].item())[:4]) for b in range(40)]
    counts = torch.zeros(40, 12)
    for _ in range(400):
        pick = dns_mn_pick(scores, 4, generator=g)
        counts[torch.arange(40), pick] += 1
    for b in range(40):
        assert {j for j in range(12) if counts[b, j] > 0} == top[b]  # every one of the N highest, nothing else
    assert counts[counts > 0].min() > 60 and counts.max() < 140  # about 100 each of 400 draws
    assert torch.equal(dns_mn_pick(scores, 1), scores.argmax(1))  # N = 1: the hardest (RecBole's dynamic)


@pytest.mark.parametrize("kind", ["dns_mn", "ahns"])
def test_a_pairwise_model_trains_on_the_picked_negative(prepare, monkeypatch, kind):
    config, trainer, train, _, _ = prepare("BPR", hard_neg=kind, hard_neg_m=8, hard_neg_n=1)
    model = trainer.model
    assert isinstance(model, HardNegatives) and type(model).__name__ == "BPR"
    batch = next(iter(train)).to(train.config["device"])
    users, pos = batch["user_id"], batch["item_id"]
    drawn = model.hard_neg_index.sample(users, 8)
    seen = train._dataset.inter_matrix(form="csr")
    assert not any(seen[u, i] for u, row in zip(users.tolist(), drawn.tolist()) for i in row)  # unseen items only
    monkeypatch.setattr(model.hard_neg_index, "sample", lambda u, m: drawn)
    model.train()
    loss = model.calculate_loss(batch)
    u = model.user_embedding.weight[users]
    scores = torch.stack([(u * model.item_embedding.weight[drawn[:, j]]).sum(-1) for j in range(8)], 1)
    if kind == "dns_mn":
        col = scores.argmax(1)
    else:
        col = torch.tensor(_ahns_brute((u * model.item_embedding.weight[pos]).sum(-1).detach(), scores.detach(), 1.0, 0.1, -2),
                           device=drawn.device)
    expected = drawn.gather(1, col.unsqueeze(1)).squeeze(1)
    assert torch.equal(batch["neg_item_id"], expected)
    ref = -torch.nn.functional.logsigmoid((u * (model.item_embedding.weight[pos] - model.item_embedding.weight[expected])).sum(-1)).mean()
    assert float((loss[0] if isinstance(loss, tuple) else loss).detach()) == pytest.approx(float(ref.detach()), rel=1e-5)


def test_graph_and_dns_models_train_with_hard_negatives():
    from recbole_dns import run_recbole_dns

    for model in ("LightGCN", "BPR_DNS"):
        result = run_recbole_dns(model=model, dataset="ml-100k", read_cmd_line=False, config_dict={
            "epochs": 1, "state": "WARNING", "show_progress": False, "train_batch_size": 8192, "hard_neg": "ahns",
            "dns_warmup": 0, "dns_k": 20})
        assert 0 < result["test_result"]["ndcg@10"] <= 1


@pytest.mark.parametrize("model", ["LightGCN", "SGL", "SimGCL"])
def test_graph_models_pick_the_candidate_their_own_ranking_scores_highest(prepare, monkeypatch, model):
    _, trainer, train, _, _ = prepare(model, hard_neg="dns_mn", hard_neg_m=8, hard_neg_n=1)
    m = trainer.model
    batch = next(iter(train)).to(train.config["device"])
    users = batch["user_id"][:64]
    drawn = m.hard_neg_index.sample(users, 8)
    monkeypatch.setattr(m.hard_neg_index, "sample", lambda u, k: drawn)
    picked = m.hard_negatives(users, batch["item_id"][:64])
    m.eval()  # brute force: the model's own full-ranking scores of every item, the highest of each row's candidates
    with torch.no_grad():
        scores = m.full_sort_predict({"user_id": users}).view(len(users), -1)
    expected = drawn.gather(1, scores.gather(1, drawn).argmax(1, keepdim=True)).squeeze(1)
    assert torch.equal(picked, expected)


@pytest.mark.parametrize("model,config", [
    ("LightGCN", {}), ("SimGCL", {}),
    ("LightGCN_DNS", {"dns_preset": "warmup_band_hard64", "dns_warmup": 0, "dns_k": 20, "dns_skip": 5}),
    ("LightGCN_DNS", {"dns_loss": "hardest", "dns_candidates": 4, "dns_k": 20}),
])
def test_a_graph_step_with_hard_negatives_propagates_once_and_trains_as_if_it_propagated_twice(
        prepare, monkeypatch, model, config):
    """The pick's tables are the loss's (one propagation with gradient): same loss and gradients as a pick on
    tables of their own, with fewer propagations."""
    import recbole_dns.models.lightgcn as lightgcn_module
    import recbole_dns.models.simgcl as simgcl_module

    _, trainer, train, _, _ = prepare(model, **{"hard_neg": "dns_mn", "hard_neg_m": 8, "hard_neg_n": 1, **config})
    m = trainer.model
    if hasattr(m, "on_epoch_start"):
        m.on_epoch_start(0)  # the DNS variants' pool
    batch = next(iter(train)).to(train.config["device"])
    static = batch["neg_item_id"].clone()
    calls = []
    for module in (lightgcn_module, simgcl_module):
        real = module.propagate
        monkeypatch.setattr(module, "propagate", lambda adj, x, real=real: calls.append(1) or real(adj, x))

    def step(reuse: bool):
        monkeypatch.setattr(type(m), "tables_from_forward", reuse)
        m.zero_grad()
        calls.clear()
        torch.manual_seed(1)
        batch["neg_item_id"] = static.clone()  # the step replaces it
        out = m.calculate_loss(batch)
        loss = sum(out) if isinstance(out, tuple) else out
        loss.backward()
        return loss.item(), [p.grad.clone() for p in m.parameters() if p.grad is not None], len(calls)

    m.train()
    loss_once, grads_once, props_once = step(True)
    loss_twice, grads_twice, props_twice = step(False)
    assert loss_once == pytest.approx(loss_twice, rel=1e-6)
    assert len(grads_once) == len(grads_twice) > 0
    for a, b in zip(grads_once, grads_twice):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert props_once < props_twice


def test_a_model_whose_forward_needs_arguments_and_has_no_tables_is_a_clear_error():
    class NeedsGraph:
        def forward(self, graph):
            raise AssertionError("must not be called")

    with pytest.raises(ConfigError, match=r"hard_neg needs NeedsGraph's score tables: define score_tables\(\)"):
        negatives.scoring_tables(NeedsGraph())


@pytest.mark.parametrize("model,config,message", [
    ("BPR", {"hard_neg": "hardest"}, r"config key 'hard_neg' must be none \| dns_mn \| ahns; got 'hardest'"),
    ("BPR", {"hard_neg": "dns_mn", "hard_neg_m": 0}, r"config key 'hard_neg_m' must be an integer >= 1 or auto; got 0"),
    ("MixGCF", {"hard_neg": "ahns"}, "hard_neg does not apply to MixGCF, which draws its own negatives"),
    ("NeuMF", {"hard_neg": "ahns"}, "hard_neg applies to pairwise models"),
    ("BPR", {"hard_neg": "ahns", "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1, "dynamic": True,
                                                          "candidate_num": 4}}, "both pick hard negatives"),
])
def test_bad_hard_negative_settings_are_clear_errors(model, config, message):
    with pytest.raises(ConfigError, match=message):
        Config(model=model, dataset="ml-100k", config_dict={**config, "state": "WARNING"}, read_cmd_line=False)


class _Counts:
    def __init__(self, inter_num, user_num, item_num):
        self.inter_num, self.user_num, self.item_num = inter_num, user_num, item_num


@pytest.mark.parametrize("counts,expected", [
    ((99, 11, 11), 4),       # 99 of 10 x 10 pairs: dense
    ((1, 11, 11), 4),        # 1 of 100 pairs: exactly the 1% threshold
    ((9, 101, 11), 64),      # 9 of 100 x 10 = 1000 pairs (0.9%): sparse
    ((198502, 22364, 12102), 64),  # amazon-beauty's size
])
def test_auto_hard_neg_m_follows_the_training_density(counts, expected):
    assert resolve_hard_neg_m("auto", _Counts(*counts)) == expected
    assert resolve_hard_neg_m(7, _Counts(*counts)) == 7


def test_bpr_dns_default_on_dense_ml_100k_takes_the_hardest_of_4(prepare):
    shipped = {"dns_preset": "warmup_band_hard64"}  # BPR_DNS.yaml's (the fixture pins the paper's otherwise)
    _, trainer, train, _, _ = prepare("BPR_DNS", epochs=1, **shipped)
    data = train.dataset
    assert data.inter_num / ((data.user_num - 1) * (data.item_num - 1)) > 0.01  # ml-100k's training split is dense
    assert trainer.model.hard_neg_m == 4 and trainer.model.hard_neg_n == 1
    _, trainer, _, _, _ = prepare("BPR_DNS", epochs=1, hard_neg_m=64, **shipped)  # the user's value wins
    assert trainer.model.hard_neg_m == 64
