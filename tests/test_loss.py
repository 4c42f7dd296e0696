"""dns_loss against Eq. 5 written out."""

import math

import numpy as np
import pytest
import torch

from recbole_dns import dns_loss


def _formula(u, p, n, q, tau):
    def f(a, b):
        return math.exp(float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))) / tau)

    return float(np.mean([-math.log(f(u[i], p[i]) / (f(u[i], n[i]) + f(u[i], q[i]) + f(u[i], p[i]))) for i in range(len(u))]))


@pytest.mark.parametrize("tau", [1.0, 0.2, 0.05])
def test_loss_equals_formula(tau):
    g = torch.Generator().manual_seed(0)
    u, p, n, q = (torch.randn(16, 5, generator=g, dtype=torch.float64) for _ in range(4))
    got = dns_loss(u, p, n, q, tau).item()
    assert got == pytest.approx(_formula(u.numpy(), p.numpy(), n.numpy(), q.numpy(), tau), rel=1e-9)


def test_loss_is_scale_invariant_and_not_a_dot_product():
    g = torch.Generator().manual_seed(1)
    u, p, n, q = (torch.randn(8, 4, generator=g) for _ in range(4))
    assert dns_loss(3 * u, 0.1 * p, 7 * n, q, 0.5).item() == pytest.approx(dns_loss(u, p, n, q, 0.5).item(), rel=1e-5)


def test_several_negatives_per_instance():
    g = torch.Generator().manual_seed(2)
    u, p = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randn(6, 4, generator=g, dtype=torch.float64)
    n, q = torch.randn(6, 2, 4, generator=g, dtype=torch.float64), torch.randn(6, 3, 4, generator=g, dtype=torch.float64)
    cos = torch.nn.functional.cosine_similarity
    logits = torch.cat([cos(u, p).unsqueeze(1), cos(u.unsqueeze(1), n, dim=-1), cos(u.unsqueeze(1), q, dim=-1)], 1) / 0.3
    ref = (-torch.log_softmax(logits, dim=1)[:, 0]).mean()
    assert dns_loss(u, p, n, q, 0.3).item() == pytest.approx(ref.item(), rel=1e-9)


@pytest.mark.parametrize("tau", [0.01, 0.1, 1.0])
def test_finite_loss_and_gradient_small_tau_and_zero_vectors(tau):
    g = torch.Generator().manual_seed(3)
    u, p, n, q = (torch.randn(32, 8, generator=g) * 50 for _ in range(4))
    u[0] = 0.0  # a zero user vector
    p[1] = 0.0  # a zero positive
    q[2] = 0.0
    n[3] = -p[3]  # cos = -1 against ... the positive direction
    for t in (u, p, n, q):
        t.requires_grad_(True)
    loss = dns_loss(u, p, n, q, tau)
    loss.backward()
    assert torch.isfinite(loss)
    for t in (u, p, n, q):
        assert torch.isfinite(t.grad).all()
    # the worst case for overflow: positive opposite the user, negatives along it (cos/tau = +-100)
    x = torch.randn(1, 8)
    big = dns_loss(x, -x, x, x, 0.01)
    assert torch.isfinite(big) and big.item() == pytest.approx(200 + math.log(2), rel=1e-4)


def test_gradient_matches_autograd_of_the_formula():
    g = torch.Generator().manual_seed(4)
    args = [torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(4)]
    assert torch.autograd.gradcheck(lambda *a: dns_loss(*a, 0.2), args)


def test_bad_tau():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="tau must be > 0"):
        dns_loss(x, x, x, x, 0.0)


@pytest.mark.parametrize("require_pow", [False, True])
def test_l2_loss_is_recboles_embloss_per_instance(require_pow):
    from recbole.model.loss import EmbLoss

    from recbole_dns.losses import l2_loss

    g = torch.Generator().manual_seed(5)
    u, p, n = (torch.randn(8, 4, generator=g) for _ in range(3))
    ours = l2_loss(u, p, n, require_pow=require_pow)
    assert ours.item() == pytest.approx(EmbLoss()(u, p, n, require_pow=require_pow).item(), rel=1e-6)
    by_hand = sum((x**2).sum() / 2 if require_pow else x.norm() for x in (u, p, n)) / 8
    assert ours.item() == pytest.approx(by_hand.item(), rel=1e-6)
    # m negatives per instance as one [B * m, d] tensor still count as B instances (EmbLoss divides by B * m)
    negs = torch.randn(8 * 5, 4, generator=g)
    expected = ((u**2).sum() + (negs**2).sum()) / 2 / 8 if require_pow else (u.norm() + negs.norm()) / 8
    assert l2_loss(u, negs, require_pow=require_pow).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("require_pow", [False, True])
@pytest.mark.parametrize("keep_static", [True, False])
@pytest.mark.parametrize("l2_dns_neg", [True, False])
@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("from_cosine", [False, True])
def test_batch_l2_in_one_reduction_equals_l2_loss_of_the_slices(require_pow, keep_static, l2_dns_neg, m, from_cosine):
    from recbole_dns.dns import DNSBatch
    from recbole_dns.dns.loss import cosine_parts
    from recbole_dns.losses import l2_loss

    g = torch.Generator().manual_seed(m)
    s = int(keep_static)
    user_e = torch.randn(5, 4, generator=g, requires_grad=True)
    items_e = torch.randn(1 + s + m, 5, 4, generator=g, requires_grad=True)
    dns_e = items_e[1 + s :].transpose(0, 1)
    neg_e = items_e[1] if keep_static else torch.randn(5, 4, generator=g)
    ids = torch.zeros(5, dtype=torch.long)
    # with the cosine's squared norms (what BPR_DNS passes), the loss and the L2 share them: both gradients count
    cos, user_sq, items_sq = cosine_parts(user_e, items_e) if from_cosine else (None, None, None)
    batch = DNSBatch(None, ids, ids, ids, ids, user_e, items_e[0], neg_e, dns_e[:, 0] if m == 1 else dns_e,
                     keep_static=keep_static, l2_dns_neg=l2_dns_neg, items_e=items_e, user_sq=user_sq,
                     items_sq=items_sq)
    got = batch.l2(require_pow)
    want = l2_loss(user_e, *batch.item_embeddings(), require_pow=require_pow)  # slice by slice
    assert torch.allclose(got, want, rtol=1e-6)
    extra = (cos * torch.arange(cos.numel()).view_as(cos)).sum() if from_cosine else 0
    want_extra = (cosine_parts(user_e, items_e)[0] * torch.arange(cos.numel()).view_as(cos)).sum() if from_cosine else 0
    got_grads = torch.autograd.grad(got + extra, (user_e, items_e))
    want_grads = torch.autograd.grad(want + want_extra, (user_e, items_e))
    for a, b in zip(got_grads, want_grads):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_batch_l2_of_zero_vectors_has_a_zero_gradient():
    from recbole_dns.dns import DNSBatch
    from recbole_dns.dns.loss import cosine_parts

    user_e = torch.zeros(3, 4, requires_grad=True)
    items_e = torch.zeros(3, 3, 4, requires_grad=True)
    _, user_sq, items_sq = cosine_parts(user_e, items_e)
    ids = torch.zeros(3, dtype=torch.long)
    batch = DNSBatch(None, ids, ids, ids, ids, user_e, items_e[0], items_e[1], items_e[2], items_e=items_e,
                     user_sq=user_sq, items_sq=items_sq)
    grads = torch.autograd.grad(batch.l2(), (user_e, items_e))
    assert all(torch.equal(gr, torch.zeros_like(gr)) for gr in grads)
