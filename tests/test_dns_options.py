"""The DNS options beyond the paper, each against a brute-force reference."""


import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from recbole_dns import ConfigError, build_pool
from recbole_dns.dns import DNSPool


def _capture(model):
    """Batches the DNS loss saw (through the model's observer hook)."""
    seen = []
    model.dns_observers.append(seen.append)
    return seen


def _formula(user_e, cands, tau, sim="cosine"):
    """Mean over the batch of -log softmax of the positive; cands [K, B, d], the positive first."""
    if sim == "cosine":
        s = F.cosine_similarity(user_e.unsqueeze(0).double(), cands.double(), dim=-1)
    else:
        s = (user_e.unsqueeze(0).double() * cands.double()).sum(-1)
    return float((-torch.log_softmax(s / tau, dim=0)[0]).mean().detach())


def _batch(train):
    return next(iter(train)).to(train.config["device"])


@pytest.mark.parametrize("negs,keep_static,sim", [(4, True, "cosine"), (3, False, "cosine"), (1, True, "dot")])
def test_loss_with_several_negatives_without_static_and_dot(prepare, negs, keep_static, sim):
    _, trainer, train, _, _ = prepare("BPR_DNS", dns_negs=negs, dns_keep_static=keep_static, dns_similarity=sim,
                                      dns_tau=0.3, reg_weight=0.0, dns_k=20)
    model = trainer.model
    model.on_epoch_start(0)
    seen = _capture(model)
    batch = _batch(train)
    (loss,) = model.calculate_loss(batch)
    b = seen[0]
    assert b.dns_neg_items.shape == ((len(batch),) if negs == 1 else (len(batch), negs))
    pool = model.dns_pool.pool
    dns = b.dns_neg_items.view(len(batch), -1)
    assert (pool[b.users].unsqueeze(1) == dns.unsqueeze(2)).any(-1).all()  # every i'- is in its user's pool
    u = model.user_embedding.weight[b.users]
    items = model.item_embedding.weight
    cols = [batch["item_id"]] + ([batch["neg_item_id"]] if keep_static else []) + list(dns.t())
    cands = torch.stack([items[c] for c in cols])
    assert loss.item() == pytest.approx(_formula(u, cands, 0.3, sim), rel=1e-5)


def test_candidates_keep_the_hardest_pool_item_by_the_loss_similarity(prepare, monkeypatch):
    _, trainer, train, _, _ = prepare("BPR_DNS", dns_candidates=8, dns_k=30)
    model = trainer.model
    model.on_epoch_start(0)
    batch = _batch(train)
    drawn = model.dns_pool.sample(batch["user_id"], 8)
    monkeypatch.setattr(model.dns_pool, "sample", lambda users, m=1, items=None: drawn)
    seen = _capture(model)
    model.calculate_loss(batch)
    u = model.user_embedding.weight[batch["user_id"]]
    cos = F.cosine_similarity(u.unsqueeze(1), model.item_embedding.weight[drawn], dim=-1)  # [B, 8]
    expected = drawn.gather(1, cos.argmax(1, keepdim=True)).squeeze(1)
    assert torch.equal(seen[0].dns_neg_items, expected)


def test_warmup_trains_with_the_base_loss_then_builds_the_pool_on_schedule(prepare):
    from recbole_dns.models.bpr import BPR

    _, trainer, train, _, _ = prepare("BPR_DNS", dns_warmup=3, dns_n=2, dns_k=10, reg_weight=0.01)
    model = trainer.model
    batch = _batch(train)
    built = []
    for epoch in range(8):
        if model.on_epoch_start(epoch):
            built.append(epoch)
        if epoch < 3:
            assert model.dns_pool.pool is None and not model.dns_active
            torch.manual_seed(0)
            ours = model.calculate_loss(batch)
            torch.manual_seed(0)
            base = BPR.calculate_loss(model, batch)
            assert all(torch.equal(a, b) for a, b in zip(ours, base))  # BPR's loss and L2, exactly
        else:
            assert model.dns_active and len(model.calculate_loss(batch)) == 2
    assert built == [3, 5, 7]


@pytest.mark.parametrize("name", ["BPR_DNS", "LightGCN_DNS"])
def test_weighted_dns_term_is_added_to_the_base_loss(prepare, name):
    from recbole_dns.models.bpr import BPR
    from recbole_dns.models.lightgcn import LightGCN

    base_class = BPR if name == "BPR_DNS" else LightGCN
    _, trainer, train, _, _ = prepare(name, dns_weight=0.5, dns_k=20, dns_tau=0.3, reg_weight=0.01)
    model = trainer.model
    model.on_epoch_start(0)
    seen = _capture(model)
    batch = _batch(train)
    terms = model.calculate_loss(batch)
    base = base_class.calculate_loss(model, batch)
    base = base if isinstance(base, tuple) else (base,)
    assert model.loss_terms == (*base_class.loss_terms, "dns") and len(terms) == len(base) + 1
    assert all(torch.allclose(a, b) for a, b in zip(terms, base))  # the base model's own terms, unchanged
    b = seen[0]
    users, items = model.train_tables()
    cands = torch.stack([items[batch["item_id"]], items[batch["neg_item_id"]], items[b.dns_neg_items]])
    assert terms[-1].item() == pytest.approx(0.5 * _formula(users[batch["user_id"]], cands, 0.3), rel=1e-5)
    # the weighted term trains the tables: its gradient is half of the unweighted DNS loss's
    model.zero_grad()
    terms[-1].backward()
    grad = model.user_embedding.weight.grad.clone()
    model.zero_grad()
    u, i = model.train_tables()
    c = torch.stack([i[batch["item_id"]], i[batch["neg_item_id"]], i[b.dns_neg_items]])
    s = F.cosine_similarity(u[batch["user_id"]].unsqueeze(0), c, dim=-1) / 0.3
    (-torch.log_softmax(s, dim=0)[0]).mean().backward()
    assert torch.allclose(grad, 0.5 * model.user_embedding.weight.grad, atol=1e-7)


@pytest.mark.parametrize("name,mode,candidates", [("BPR_DNS", "negative", 0), ("BPR_DNS", "negative", 4),
                                                   ("BPR_DNS", "hardest", 0), ("LightGCN_DNS", "hardest", 3)])
def test_pool_item_as_the_base_models_negative(prepare, monkeypatch, name, mode, candidates):
    from recbole_dns.models.bpr import BPR
    from recbole_dns.models.lightgcn import LightGCN

    base_class = BPR if name == "BPR_DNS" else LightGCN
    _, trainer, train, _, _ = prepare(name, dns_loss=mode, dns_candidates=candidates, dns_k=20, reg_weight=0.01)
    model = trainer.model
    model.on_epoch_start(0)
    batch = _batch(train)
    users, static = batch["user_id"], batch["neg_item_id"].clone()
    drawn = model.dns_pool.sample(users, max(candidates, 1)).view(len(users), -1)
    assert (model.dns_pool.pool[users].unsqueeze(2) == drawn.unsqueeze(1)).any(1).all()  # pool items
    monkeypatch.setattr(model.dns_pool, "sample", lambda u, m, items=None: drawn if m > 1 else drawn[:, 0])
    seen = _capture(model)
    terms = model.calculate_loss(batch)
    # brute force: score every candidate with the model's own dot product, keep the highest
    u_table, i_table = (t.detach() for t in model.train_tables())
    options = ([static.tolist()] if mode == "hardest" else []) + [drawn[:, j].tolist() for j in range(drawn.shape[1])]
    expected = []
    for b, user in enumerate(users.tolist()):
        scores = [float(u_table[user] @ i_table[col[b]]) for col in options]
        expected.append(options[max(range(len(options)), key=lambda j: scores[j])][b])
    assert batch["neg_item_id"].tolist() == expected and seen[0].dns_neg_items.tolist() == expected
    if mode == "hardest":
        assert 0 < sum(e == s for e, s in zip(expected, static.tolist())) < len(expected)  # both sources win some
    base = base_class.calculate_loss(model, batch)  # the base model's own loss on the chosen negatives
    base = base if isinstance(base, tuple) else (base,)
    assert model.loss_terms == base_class.loss_terms and len(terms) == len(base)
    assert all(torch.allclose(a, b) for a, b in zip(terms, base))


@pytest.mark.parametrize("key,value", [("dns_weight", 0.5), ("dns_negs", 2), ("log_grad_share", True)])
def test_pool_item_as_negative_rejects_softmax_only_keys(key, value):
    from recbole_dns import Config

    with pytest.raises(ConfigError, match=rf"config key '{key}' must be .* with dns_loss: negative .*; got {value!r}"):
        Config(model="BPR_DNS", dataset="ml-100k", read_cmd_line=False,
               config_dict={"dns_loss": "negative", key: value, "state": "WARNING"})


@pytest.mark.parametrize("sampler,largest", [("dissimilar", False), ("similar", True)])
def test_rank_band_against_brute_force(sampler, largest):
    rng = np.random.default_rng(4)
    user, item = rng.normal(size=(30, 6)).astype(np.float32), rng.normal(size=(60, 6)).astype(np.float32)
    mask = rng.random((30, 60)) < 0.3
    mask[:, 0] = True
    mask[7, : 60 - 12] = True  # user 7: 12 allowed items, fewer than skip + k = 15
    exclude = sp.csr_matrix(mask.astype(np.float32))
    pool = build_pool(torch.from_numpy(user), torch.from_numpy(item), exclude, 5, sampler, chunk_size=4, skip=10)
    cos = (user / np.linalg.norm(user, axis=1, keepdims=True)) @ (item / np.linalg.norm(item, axis=1, keepdims=True)).T
    for u in range(30):
        allowed = np.flatnonzero(~mask[u])
        order = allowed[np.argsort(-cos[u, allowed] if largest else cos[u, allowed], kind="stable")]
        first = min(10, max(len(order) - 5, 0))
        assert set(pool[u].tolist()) == set(order[first:first + 5].tolist()), u
    with pytest.raises(ValueError, match="skip must be an integer >= 0"):
        build_pool(torch.from_numpy(user), torch.from_numpy(item), exclude, 5, skip=-1)


def test_instance_draw_is_fixed_per_instance_and_distinct_within_a_user():
    rng = np.random.default_rng(0)
    mask = rng.random((5, 40)) < 0.3
    mask[:, 0] = True
    exclude = sp.csr_matrix(mask.astype(np.float32))
    pool = DNSPool(exclude, n=2, k=6, draw="instance")
    pool.refresh(torch.randn(5, 4), torch.randn(40, 4), 0)
    users = torch.as_tensor(np.repeat(np.arange(5), mask.sum(1) - 1))
    items = torch.as_tensor(np.concatenate([np.flatnonzero(mask[u])[1:] for u in range(5)]))
    a = pool.sample(users, 1, items)
    order = torch.randperm(len(users))
    assert torch.equal(pool.sample(users[order], 1, items[order]), a[order])  # the same instance, the same i'-
    for u in range(5):
        mine = a[users == u]
        assert len(set(mine.tolist())) == min(len(mine), 6)  # distinct while the user has <= k instances
        j = torch.arange(len(mine))
        assert torch.equal(mine, pool.pool[u, pool.perm[u, j % 6]])
    two = pool.sample(users, 2, items)
    j_all = pool.instance_index(users, items)
    assert two.shape == (len(users), 2) and torch.equal(two[:, 0], pool.pool[users, pool.perm[users, (2 * j_all) % 6]])
    assert torch.equal(two[:, 1], pool.pool[users, pool.perm[users, (2 * j_all + 1) % 6]])
    pool.refresh(torch.randn(5, 4), torch.randn(40, 4), 2)
    assert not torch.equal(pool.sample(users, 1, items), a)  # a new assignment at the next refresh


def test_cosine_prediction_and_l2_coverage(prepare, monkeypatch):
    from recbole.data.interaction import Interaction

    _, trainer, train, _, _ = prepare("BPR_DNS", dns_predict="cosine", dns_l2_dns_neg=False, reg_weight=0.1,
                                      require_pow=True)
    model = trainer.model
    model.on_epoch_start(0)
    users = torch.tensor([1, 2, 3], device=model.device)
    scores = model.full_sort_predict(Interaction({"user_id": users})).view(3, -1)
    ref = F.normalize(model.user_embedding.weight[users], dim=1) @ F.normalize(model.item_embedding.weight, dim=1).t()
    assert torch.allclose(scores, ref, atol=1e-6)
    batch = _batch(train)
    seen = _capture(model)
    _, l2 = model.calculate_loss(batch)
    e = [model.user_embedding(batch["user_id"]), model.item_embedding(batch["item_id"]), model.item_embedding(batch["neg_item_id"])]
    assert l2.item() == pytest.approx(0.1 * sum((x ** 2).sum() / 2 for x in e).item() / len(batch), rel=1e-5)
    assert seen[0].item_ids()[-1] is seen[0].neg_items  # i'- left out of the L2 term


def test_grad_share_is_the_contrastive_negatives_softmax_weight(prepare):
    _, trainer, train, _, _ = prepare("BPR_DNS", epochs=1, eval_step=0, log_grad_share=True, dns_negs=2)
    seen = _capture(trainer.model)
    trainer.fit(train, None, saved=False)
    shares = []
    for b in seen:
        w = torch.softmax(b.logits.double(), dim=0)
        shares.append((w[2] + w[3]) / (w[1] + w[2] + w[3]))
    assert trainer.monitor.history[0]["grad_share_dns"] == pytest.approx(float(torch.cat(shares).mean()), rel=1e-5)
    assert "train_loss" in trainer.monitor.history[0]


@pytest.mark.parametrize("key,value,allowed", [
    ("dns_negs", 0, "an integer >= 1"), ("dns_candidates", -1, "an integer >= 0"),
    ("dns_similarity", "l2", "cosine | dot"), ("dns_keep_static", "yes", "true or false"),
    ("dns_warmup", -2, "an integer >= 0"), ("dns_skip", 1.5, r"an integer >= 0 or a share of the items in \(0, 1\)"),
    ("dns_draw", "epoch", "batch | instance"), ("dns_predict", "dot", "model | cosine"),
    ("dns_weight", -1, "a number >= 0 or null"), ("dns_weight", "half", "a number >= 0 or null"),
    ("dns_loss", "bpr", "softmax | negative | hardest"),
])
def test_bad_option_values_name_the_key(key, value, allowed):
    from recbole_dns import Config

    with pytest.raises(ConfigError, match=rf"config key '{key}' must be {allowed}; got {value!r}"):
        Config(model="BPR_DNS", dataset="ml-100k", config_dict={key: value, "state": "WARNING"}, read_cmd_line=False)


def test_band_as_shares_of_the_catalogue_is_the_band_of_those_counts(prepare):
    _, trainer, _, _, _ = prepare("BPR_DNS", dns_k=0.05, dns_skip=0.02, dns_sampler="similar")
    pool = trainer.model.dns_pool
    assert (pool.k, pool.skip) == (round(0.05 * 1682), round(0.02 * 1682)) == (84, 34)  # ml-100k: 1682 items
    users, items = (t.detach() for t in trainer.model.train_tables())
    pool.refresh(users, items, 0)
    exclude = pool.exclude.toarray().astype(bool)
    cos = F.normalize(users, dim=1) @ F.normalize(items, dim=1).t()
    for u in range(0, users.shape[0], 97):  # brute force: ranks 35-118 of the allowed items by cosine
        order = [i for i in torch.argsort(cos[u], descending=True).tolist() if not exclude[u, i]]
        assert set(pool.pool[u].tolist()) == set(order[34:118])


def test_band_larger_than_the_catalogue_is_a_clear_error(prepare):
    with pytest.raises(ConfigError, match=r"'dns_skip' \+ 'dns_k' must be at most the number of items .* \(1682\); got 1600 \+ 100"):
        prepare("BPR_DNS", dns_skip=1600)
    with pytest.raises(ConfigError, match=r"\(1682\); got 0\.95 \(1598 items\) \+ 0\.1 \(168 items\)"):
        prepare("BPR_DNS", dns_skip=0.95, dns_k=0.1)


@pytest.mark.parametrize("model", ["LightGCN_DNS", "SimGCL_DNS", "SGL_DNS"])
def test_graph_variants_train_with_the_options(model):
    from recbole_dns import run_recbole_dns

    result = run_recbole_dns(model=model, dataset="ml-100k", read_cmd_line=False, config_dict={
        "epochs": 2, "state": "WARNING", "show_progress": False, "train_batch_size": 8192, "dns_negs": 2,
        "dns_candidates": 4, "dns_warmup": 1, "dns_draw": "instance", "dns_n": 1, "dns_k": 20})
    assert 0 < result["test_result"]["ndcg@10"] <= 1
