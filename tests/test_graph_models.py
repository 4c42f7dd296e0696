"""LightGCN, SGL, SimGCL and their DNS variants."""

import math

import pytest
import scipy.sparse as sp
import numpy as np
import torch
import torch.nn.functional as F

from recbole_dns import Config, ConfigError, DNSTrainer, run_recbole_dns
from recbole_dns.graph import symmetric_norm_adjacency
from recbole_dns.losses import info_nce, info_nce_table

GRAPH_MODELS = ["LightGCN", "SGL", "SimGCL"]


@pytest.mark.parametrize("model", GRAPH_MODELS + [m + "_DNS" for m in GRAPH_MODELS])
def test_trains_two_epochs_and_full_sort_evaluates(model):
    result = run_recbole_dns(
        model=model, dataset="ml-100k", read_cmd_line=False,
        config_dict={"epochs": 2, "show_progress": False, "state": "WARNING", "train_batch_size": 8192,
                     "dns_n": 1, "dns_k": 50},
    )
    assert 0 < result["test_result"]["ndcg@10"] <= 1
    assert result["best_valid_result"] is not None


@pytest.mark.parametrize("base", GRAPH_MODELS + ["BPR"])
def test_dns_true_selects_the_variant(base):
    config = Config(model=base, dataset="ml-100k", config_dict={"dns": True, "state": "WARNING"}, read_cmd_line=False)
    assert config["model"] == base + "_DNS" and config.model_class.__name__ == base + "_DNS"
    assert config["n_layers" if base != "BPR" else "embedding_size"] is not None


@pytest.mark.parametrize("model", ["NGCF", "NCL", "DMF"])
def test_dns_true_on_other_graph_models_names_the_supported_ones(model):
    names = r"not supported for model .*BPR -> BPR_DNS.*LightGCN -> LightGCN_DNS.*SGL -> SGL_DNS.*SimGCL -> SimGCL_DNS"
    with pytest.raises(ConfigError, match=names):
        Config(model=model, dataset="ml-100k", config_dict={"dns": True}, read_cmd_line=False)


def test_normalised_adjacency_matches_dense_formula():
    rng = np.random.default_rng(0)
    inter = sp.coo_matrix((rng.random((6, 9)) < 0.3).astype(np.float32))
    adj = symmetric_norm_adjacency(inter).to_dense().numpy()
    a = np.zeros((15, 15), dtype=np.float64)
    a[:6, 6:] = inter.toarray()
    a[6:, :6] = inter.toarray().T
    d = a.sum(1) + 1e-7
    ref = a / np.sqrt(d)[:, None] / np.sqrt(d)[None, :]
    assert np.allclose(adj, ref, atol=1e-6)


def test_simgcl_perturbation_has_norm_eps_and_the_sign_of_the_embedding(prepare):
    _, trainer, _, _, _ = prepare("SimGCL", eps=0.3)
    emb = torch.randn(200, 16)
    delta = trainer.model.perturb(emb) - emb
    assert torch.allclose(delta.norm(dim=1), torch.full((200,), 0.3), atol=1e-5)
    assert (torch.sign(delta) == torch.sign(emb))[delta != 0].all()
    assert not torch.equal(trainer.model.perturb(emb), trainer.model.perturb(emb))  # fresh noise each call


def test_simgcl_views_are_noisy_and_the_plain_forward_is_not(prepare):
    _, trainer, _, _, _ = prepare("SimGCL")
    m = trainer.model
    a, b = m.forward(), m.forward()
    assert torch.allclose(a[0], b[0], rtol=0, atol=1e-6)  # equal up to the order of a CUDA sparse product's sums
    p, q = m.forward(perturbed=True), m.forward(perturbed=True)
    assert not torch.allclose(p[0], q[0])


@pytest.mark.parametrize("model", ["SimGCL", "SimGCL_DNS"])
def test_simgcl_starts_from_xavier_and_init_std_lifts_its_propagated_layers_above_the_noise(prepare, model):
    # the cause of SimGCL's stall at lr 0.001: with Xavier the propagated layers start far below eps
    def layer_norms(**cfg):
        _, trainer, _, _, _ = prepare(model, **cfg)
        with torch.no_grad():
            users, items = trainer.model.layer_embeddings()
        return [float(torch.cat([users[:, k], items[:, k]]).norm(dim=1).mean()) for k in range(users.shape[1])]

    eps = 0.1
    default, normal = layer_norms(), layer_norms(init_std=1.0)
    assert max(default[1:]) < eps / 2  # Xavier (the default): the layers SimGCL uses (1..L) start below the noise
    assert default[0] < 1.0
    assert min(normal[1:]) > 2 * eps  # N(0, 1): well above it
    assert normal[0] == pytest.approx(8.0, rel=0.05)  # N(0, 1) rows of 64 entries: norm ~ sqrt(64)


@pytest.mark.parametrize("model", ["SimGCL", "SimGCL_DNS"])
def test_simgcl_final_embedding_is_the_mean_of_layers_1_to_L_or_0_to_L_with_use_layer0(prepare, model):
    for use_layer0, first in ((False, 1), (True, 0)):
        _, trainer, _, _, _ = prepare(model, use_layer0=use_layer0)
        m = trainer.model
        with torch.no_grad():
            users, items = m.layer_embeddings()  # LightGCN's: every layer, unperturbed
            got_u, got_i = m.forward()
        torch.testing.assert_close(got_u, users[:, first:].mean(dim=1))
        torch.testing.assert_close(got_i, items[:, first:].mean(dim=1))


def test_init_std_on_a_model_that_does_not_read_it_is_an_error():
    with pytest.raises(ConfigError, match=r"'init_std' applies to SimGCL and SimGCL_DNS; model 'LightGCN'"):
        Config(model="LightGCN", dataset="ml-100k", config_dict={"init_std": 1.0}, read_cmd_line=False)
    with pytest.raises(ConfigError, match=r"'init_std' must be a number > 0 or null; got -1"):
        Config(model="SimGCL", dataset="ml-100k", config_dict={"init_std": -1}, read_cmd_line=False)
    with pytest.raises(ConfigError, match=r"'use_layer0' applies to SimGCL and SimGCL_DNS; model 'SGL'"):
        Config(model="SGL", dataset="ml-100k", config_dict={"use_layer0": True}, read_cmd_line=False)
    with pytest.raises(ConfigError, match=r"'use_layer0' must be true or false; got 'yes'"):
        Config(model="SimGCL", dataset="ml-100k", config_dict={"use_layer0": "yes"}, read_cmd_line=False)


def test_info_nce_by_hand():
    v1 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    v2 = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    t = 0.5
    c = 1 / math.sqrt(2)
    # row 0: cos with v2 rows = 1, c ; row 1: 0, c ; positives on the diagonal
    row0 = -math.log(math.exp(1 / t) / (math.exp(1 / t) + math.exp(c / t)))
    row1 = -math.log(math.exp(c / t) / (math.exp(0) + math.exp(c / t)))
    assert info_nce(v1, v2, t).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_info_nce_matches_the_whole_matrix_form_in_value_and_gradient():
    """SimGCL's in-batch InfoNCE runs through the blocked log-sum-exp: 300 rows cross blocks of 128."""
    torch.manual_seed(0)
    v1, v2 = torch.randn(300, 8, requires_grad=True), torch.randn(300, 8, requires_grad=True)
    t = 0.2
    logits = F.normalize(v1, dim=1) @ F.normalize(v2, dim=1).t() / t
    expected = (torch.logsumexp(logits, dim=1) - logits.diagonal()).mean()
    ref_grads = torch.autograd.grad(expected, (v1, v2))
    got = info_nce(v1, v2, t)
    grads = torch.autograd.grad(got, (v1, v2))
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)


def test_layer_mean_is_the_stacked_mean_in_value_and_gradient(prepare):
    from recbole_dns.graph import layer_mean

    g = torch.Generator().manual_seed(0)
    layers = [torch.randn(9, 4, generator=g, requires_grad=True) for _ in range(3)]
    upstream = torch.randn(9, 4, generator=g)
    mine, theirs = layer_mean(layers), torch.stack(layers, dim=1).mean(dim=1)
    torch.testing.assert_close(mine, theirs)
    for a, b in zip(torch.autograd.grad(mine, layers, upstream), torch.autograd.grad(theirs, layers, upstream)):
        torch.testing.assert_close(a, b)
    model = prepare("LightGCN")[1].model  # its tables are the mean of the layers MixGCF reads
    users, items = model.forward()
    layer_users, layer_items = model.layer_embeddings()
    torch.testing.assert_close(users, layer_users.mean(dim=1))
    torch.testing.assert_close(items, layer_items.mean(dim=1))


@pytest.mark.parametrize("bound", [None, 1.0])
def test_blocked_log_sum_exp_has_the_gradients_of_its_value(bound):
    """Both paths (row maxima; scores bounded by ``bound``) against finite differences, any upstream gradient,
    across blocks (7 rows in blocks of 3)."""
    from recbole_dns.losses import _LogSumExpOfProducts

    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(7, 4, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    t = F.normalize(torch.randn(11, 4, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: _LogSumExpOfProducts.apply(x, y, 3, bound), (a, t))
    expected = torch.logsumexp(a @ t.t(), dim=1)
    torch.testing.assert_close(_LogSumExpOfProducts.apply(a, t, 3, bound), expected)


@pytest.mark.parametrize("keywords", [{}, {"bounded": False}, {"block": 7}, {"block": 1000, "bounded": False}])
@pytest.mark.parametrize("tau", [0.2, 0.005])
def test_info_nce_table_is_finite_and_exact_at_any_temperature(tau, keywords):
    """At tau 0.005 the scores reach 200, beyond float32's exp: the row maxima path; at 0.2 the bounded one
    (``bounded=False`` forces the row maxima; any ``block``, the whole batch included, gives the same loss)."""
    torch.manual_seed(0)
    anchor, table = torch.randn(150, 8, requires_grad=True), torch.randn(90, 8, requires_grad=True)
    rows = torch.randint(0, 90, (150,))
    got = info_nce_table(anchor, table, rows, tau, **keywords)
    grads = torch.autograd.grad(got, (anchor, table))
    a64, t64 = anchor.double(), table.double()
    logits = F.normalize(a64, dim=1) @ F.normalize(t64, dim=1).t() / tau
    expected = (torch.logsumexp(logits, dim=1) - logits[torch.arange(150), rows]).sum()
    assert torch.isfinite(got) and got.item() == pytest.approx(expected.item(), rel=1e-5)
    for g, r in zip(grads, torch.autograd.grad(expected, (anchor, table))):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, r.float(), rtol=1e-3, atol=1e-4)


def test_info_nce_table_by_hand():
    anchor = torch.tensor([[2.0, 0.0]])
    table = torch.tensor([[0.0, 1.0], [1.0, 1.0], [-3.0, 0.0]])
    t = 0.5
    c = 1 / math.sqrt(2)
    # cosines with the table's rows: 0, c, -1; the positive is row 1
    expected = -math.log(math.exp(c / t) / (math.exp(0) + math.exp(c / t) + math.exp(-1 / t)))
    assert info_nce_table(anchor, table, torch.tensor([1]), t).item() == pytest.approx(expected, rel=1e-6)


def test_sgl_ssl_loss_equals_recboles_in_value_and_gradient(prepare):
    from recbole.model.general_recommender.sgl import SGL as RecBoleSGL

    _, trainer, _, _, _ = prepare("SGL")
    model = trainer.model
    g = torch.Generator().manual_seed(0)
    tables = [torch.randn(n, 8, generator=g, requires_grad=True) for n in (30, 30, 40, 40)]
    users = torch.tensor([0, 3, 3, 29, 7])  # a repeated user, as in a batch
    items = torch.tensor([1, 39, 5, 5, 0])
    ours = model.calc_ssl_loss(users, items, *tables)
    grads = torch.autograd.grad(ours, tables)
    theirs = RecBoleSGL.calc_ssl_loss(model, users, items, *tables)
    ref_grads = torch.autograd.grad(theirs, tables)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_simgcl_loss_parts(prepare):
    _, trainer, train, _, _ = prepare("SimGCL", **{"lambda": 0.0})
    batch = next(iter(train)).to(train.config["device"])
    bpr, reg, cl = trainer.model.calculate_loss(batch)
    assert cl.item() == 0.0 and bpr.item() > 0 and reg.item() > 0


@pytest.mark.parametrize("model", [m + "_DNS" for m in GRAPH_MODELS])
def test_pool_refresh_on_schedule_with_one_propagation(prepare, monkeypatch, model):
    _, trainer, train, _, _ = prepare(model, epochs=4, dns_n=3, dns_k=20, eval_step=0, train_batch_size=50000)
    assert isinstance(trainer, DNSTrainer)
    m = trainer.model
    refreshes, calls = [], []
    original_forward = type(m).forward
    original_hook = type(m).on_epoch_start

    def counting_forward(self, *args, **kwargs):
        calls.append((args, kwargs))
        return original_forward(self, *args, **kwargs)

    def spy(self, epoch):
        calls.clear()
        rebuilds = len(getattr(m, "_graph_builds", []))
        if original_hook(self, epoch):
            refreshes.append((epoch, list(calls), len(getattr(m, "_graph_builds", [])) - rebuilds))
            assert self.dns_pool.built_at == epoch
        return False

    monkeypatch.setattr(type(m), "forward", counting_forward)
    monkeypatch.setattr(type(m), "on_epoch_start", spy)
    if hasattr(m, "graph_construction"):  # SGL: the refresh must not rebuild the augmented graphs
        m._graph_builds = []
        original_gc = m.graph_construction
        monkeypatch.setattr(m, "graph_construction", lambda: (m._graph_builds.append(1), original_gc())[1])
    trainer.fit(train, None, saved=False)
    assert [e for e, _, _ in refreshes] == [0, 3]
    for epoch, fwd_calls, graph_rebuilds in refreshes:
        assert len(fwd_calls) == 1, (epoch, fwd_calls)
        args, kwargs = fwd_calls[0]
        assert not kwargs.get("perturbed", False) and not any(a is True for a in args)  # SimGCL: no noise
        assert graph_rebuilds == 0


def test_symmetric_propagation_matches_dense_products_and_gradient():
    from recbole_dns.graph import propagate, to_csr

    rng = np.random.default_rng(1)
    inter = sp.coo_matrix((rng.random((7, 5)) < 0.4).astype(np.float32))
    adj = symmetric_norm_adjacency(inter)
    dense = adj.to_dense().double()
    x = torch.randn(12, 3, dtype=torch.float32, requires_grad=True)
    g = torch.randn(12, 3)
    out = propagate(to_csr(adj), propagate(to_csr(adj), x))
    (out * g).sum().backward()
    ref_x = x.detach().double().requires_grad_(True)
    ref = dense @ (dense @ ref_x)
    (ref * g.double()).sum().backward()
    assert torch.allclose(out.double(), ref, atol=1e-5)
    assert torch.allclose(x.grad.double(), ref_x.grad, atol=1e-5)


def test_lightgcn_forward_is_the_mean_of_the_layer_embeddings(prepare):
    _, trainer, _, _, _ = prepare("LightGCN", n_layers=2)
    m = trainer.model
    a = m.norm_adj_matrix.to_dense()
    e0 = torch.cat([m.user_embedding.weight, m.item_embedding.weight])
    e1 = a @ e0
    ref = (e0 + e1 + a @ e1) / 3
    users, items = m.forward()
    assert torch.allclose(torch.cat([users, items]), ref, atol=1e-5)


@pytest.mark.parametrize("require_pow", [False, True])
def test_sgl_l2_honours_require_pow(prepare, require_pow):
    _, trainer, train, _, _ = prepare("SGL", reg_weight=0.5, require_pow=require_pow)
    m = trainer.model
    batch = next(iter(train)).to(train.config["device"])
    u, p, n = batch["user_id"], batch["item_id"], batch["neg_item_id"]
    users, items = m.forward(m.train_graph)
    bpr = -torch.nn.functional.logsigmoid((users[u] * items[p]).sum(1) - (users[u] * items[n]).sum(1)).sum()
    ego = [m.user_embedding(u), m.item_embedding(p), m.item_embedding(n)]
    l2 = sum((e**2).sum() / 2 if require_pow else e.norm() for e in ego) / len(u)
    got = m.calc_bpr_loss(users, items, u, p, n)
    assert got.item() == pytest.approx((bpr + 0.5 * l2).item(), rel=1e-5)
