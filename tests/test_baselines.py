"""MixGCF and PRIS, and the shared rejection sampler."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy import stats

from recbole_dns import ConfigError, run_recbole_dns
from recbole_dns.models.mixgcf import mix_negatives
from recbole_dns.models.pris import PRIS
from recbole_dns.sampling import ExclusionIndex


def _exclude(n_users=6, n_items=12, density=0.4, seed=0):
    rng = np.random.default_rng(seed)
    mask = rng.random((n_users, n_items)) < density
    mask[:, 0] = True
    return sp.csr_matrix(mask.astype(np.float32)), mask


@pytest.mark.parametrize("shape,density", [((6, 12), 0.4), ((7, 13), 0.9), ((3, 5), 0.0), ((40, 33), 0.05)])
@pytest.mark.parametrize("bitmap_mb", [256, 0])  # a bitmap of the pairs, or sorted keys
def test_exclusion_index_contains_matches_brute_force(shape, density, bitmap_mb):
    exclude, mask = _exclude(*shape, density=density)
    index = ExclusionIndex(exclude, bitmap_mb=bitmap_mb)
    assert (index.bits is not None) == (bitmap_mb > 0)
    users = torch.arange(shape[0]).repeat_interleave(shape[1])
    items = torch.arange(shape[1]).repeat(shape[0])
    assert torch.equal(index.contains(users, items), torch.as_tensor(mask.ravel()))
    assert torch.equal(index.contains(torch.arange(shape[0]).unsqueeze(1), torch.arange(shape[1])), torch.as_tensor(mask))


def test_rejection_sampler_is_uniform_over_allowed_items():
    exclude, mask = _exclude(seed=1)
    index = ExclusionIndex(exclude)
    torch.manual_seed(0)
    users = torch.arange(6)
    draws = index.sample(users.repeat(2000), 3).view(2000, 6, 3)
    for u in range(6):
        got = draws[:, u].flatten().numpy()
        assert not mask[u, got].any()
        allowed = np.flatnonzero(~mask[u])
        counts = np.bincount(got, minlength=12)[allowed]
        assert stats.chisquare(counts).pvalue > 1e-3


def test_rejection_sampler_falls_back_to_exact_draws():
    mask = np.ones((2, 50), dtype=bool)
    mask[0, 7] = False  # user 0 may only get item 7
    mask[1, 10:] = False
    index = ExclusionIndex(sp.csr_matrix(mask.astype(np.float32)))
    out = index.sample(torch.tensor([0, 1]), 20, max_rounds=1)
    assert (out[0] == 7).all() and (out[1] >= 10).all()


def test_mixgcf_synthetic_negative_by_hand():
    d = 2
    user = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # [B=1, L+1=2, d]; pooled user = (0.5, 0.5)
    pos = torch.tensor([[[1.0, 1.0], [2.0, 0.0]]])
    cand = torch.tensor([[[[0.0, 0.0], [0.0, -4.0]], [[2.0, 2.0], [0.0, 2.0]]]])  # [1, n=2, 2, d]
    alpha = torch.tensor([[0.25, 0.5]])
    out = mix_negatives(user, pos, cand, alpha)
    # layer 0: mixes 0.25*pos + 0.75*cand -> (0.25,0.25) [score .25], (1.75,1.75) [score 1.75]: pick cand 1
    # layer 1: 0.5*pos + 0.5*cand -> (1,-2) [score -.5], (1, 1) [score 1]: pick cand 1
    assert torch.allclose(out, torch.tensor([[[1.75, 1.75], [1.0, 1.0]]]))
    assert out.shape == (1, 2, d)


def test_mixgcf_picks_per_layer_independently():
    user = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    pos = torch.zeros(1, 2, 2)
    cand = torch.tensor([[[[5.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [5.0, 0.0]]]])
    out = mix_negatives(user, pos, cand, torch.zeros(1, 2))
    assert torch.allclose(out, torch.tensor([[[5.0, 0.0], [5.0, 0.0]]]))  # cand 0 at layer 0, cand 1 at layer 1


@pytest.mark.parametrize("model,extra", [
    ("MixGCF", {"n_negs": 8}),
    ("PRIS", {"proposal": "uniform"}),
    ("PRIS", {"proposal": "popularity"}),
    ("PRIS", {"proposal": "cluster", "cluster_interval": 1}),
])
def test_trains_two_epochs_and_evaluates(model, extra):
    result = run_recbole_dns(model=model, dataset="ml-100k", read_cmd_line=False, config_dict={
        "epochs": 2, "show_progress": False, "state": "WARNING", "train_batch_size": 4096, **extra})
    assert 0 < result["test_result"]["ndcg@10"] <= 1


def test_pris_weights_sum_to_one_and_favour_high_scores():
    scores = torch.tensor([[0.0, 1.0, 2.0, 3.0], [5.0, -1.0, 0.0, 0.0]], requires_grad=True)
    log_q = torch.zeros(2, 4)
    w = PRIS.importance_weights(scores, log_q)
    assert torch.allclose(w.sum(1), torch.ones(2))
    assert (w[0, 1:] > w[0, :-1]).all() and w[1].argmax() == 0
    assert not w.requires_grad  # computed without gradient
    # a negative that the proposal over-samples (large q) is down-weighted
    w2 = PRIS.importance_weights(torch.zeros(1, 2), torch.log(torch.tensor([[0.9, 0.1]])))
    assert w2[0, 0] < w2[0, 1]


@pytest.mark.parametrize("proposal", ["uniform", "popularity", "cluster"])
def test_pris_proposals_are_valid_and_match_their_sampling_frequency(prepare, proposal):
    _, trainer, _, _, _ = prepare("PRIS", proposal=proposal, n_clusters=4)
    model = trainer.model
    if proposal == "cluster":
        model.build_clusters()
    users = torch.tensor([1, 50, 300], device=model.device)
    probs = model.proposal_probs(users).cpu()
    allowed = model.exclusion.allowed_mask(users).cpu()
    assert torch.allclose(probs.sum(1), torch.ones(3), atol=1e-5)
    assert (probs[~allowed] == 0).all() and (probs >= 0).all()
    torch.manual_seed(0)
    per_user = 4000
    items, log_q = (t.cpu() for t in model.sample_negatives(users.repeat_interleave(per_user)))
    items = items.view(3, -1)
    for row in range(3):
        got = items[row]
        assert allowed[row, got].all()
        p = probs[row].double().numpy()
        counts = np.bincount(got.numpy(), minlength=len(p))
        # chi-square over 20 groups of items of about equal probability mass (sorted by probability)
        order = np.argsort(p)
        group = np.minimum((np.cumsum(p[order]) * 20).astype(int), 19)
        obs = np.bincount(group, weights=counts[order], minlength=20)
        exp = np.bincount(group, weights=p[order], minlength=20) * got.numel()
        keep = exp > 0
        assert stats.chisquare(obs[keep], exp[keep] * obs[keep].sum() / exp[keep].sum()).pvalue > 1e-4, proposal
    items, log_q = items[:, :model.n_negs], log_q.view(3, -1)[:, :model.n_negs]
    # log q matches the exact probabilities up to a per-user constant
    first = items[0]
    diff = log_q[0] - torch.log(probs[0, first])
    assert torch.allclose(diff, diff[0].expand_as(diff), atol=1e-4)


@pytest.mark.parametrize("model,key,value", [
    ("PRIS", "proposal", "zipf"), ("PRIS", "n_negs", 0), ("PRIS", "num_negs", 5), ("MixGCF", "n_negs", 0),
])
def test_bad_values_are_clear_errors(prepare, model, key, value):
    with pytest.raises(ConfigError, match=f"config key '{key}'"):
        prepare(model, **{key: value})


def test_pris_l2_is_per_instance_like_bprs(prepare, monkeypatch):
    """PRIS's L2 over its n_negs negatives is divided by the batch, not by batch x n_negs."""
    _, trainer, train, _, _ = prepare("PRIS", proposal="uniform", n_negs=5, reg_weight=0.1, require_pow=True)
    model = trainer.model
    batch = next(iter(train)).to(train.config["device"])
    user, pos = batch["user_id"], batch["item_id"]
    negs = torch.randint(1, model.n_items, (len(user), 5), device=user.device)
    monkeypatch.setattr(model, "sample_negatives", lambda users: (negs, torch.zeros(negs.shape, device=negs.device)))
    _, l2 = model.calculate_loss(batch)
    e = [model.user_embedding(user), model.item_embedding(pos), model.item_embedding(negs)]
    assert l2.item() == pytest.approx(0.1 * sum((x**2).sum() / 2 for x in e).item() / len(user), rel=1e-5)
