"""dns_compile: the batch loss through torch.compile gives the eager loss's values and gradients, and falls back
to the eager loss, with one warning, where compiling fails."""

import pytest
import torch

from recbole_dns.dns import CompiledLoss, dns_loss_parts, loss_function
from recbole_dns.dns.loss import dns_loss


def _grads(fn, user_e, candidates, tau, similarity, reduction):
    u = user_e.clone().requires_grad_()
    c = candidates.clone().requires_grad_()
    loss, logits, user_sq, items_sq = fn(u, c, tau, similarity, reduction)
    total = loss + (0.5 * user_sq.sum() + 0.25 * items_sq.sum() if user_sq is not None else 0)
    total.backward()
    return [loss, logits, *(t for t in (user_sq, items_sq) if t is not None), u.grad, c.grad]


@pytest.mark.parametrize("similarity,reduction", [("cosine", "mean"), ("dot", "sum")])
def test_compiled_loss_equals_the_eager_loss_for_any_batch_k_and_tau(similarity, reduction):
    compiled = CompiledLoss()
    gen = torch.Generator().manual_seed(0)
    for batch, k, tau in ((64, 3, 0.2), (37, 3, 0.05), (64, 5, 1.0)):  # a short last batch, more negatives, tau
        user_e, candidates = torch.randn(batch, 16, generator=gen), torch.randn(k, batch, 16, generator=gen)
        candidates[1, 3] = 0  # a zero vector: cosine 0, finite gradients
        got = _grads(compiled, user_e, candidates, tau, similarity, reduction)
        ref = _grads(dns_loss_parts, user_e, candidates, tau, similarity, reduction)
        assert compiled.failed is None
        for g, r in zip(got, ref):
            torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)  # float32 sums in another order
    if similarity == "cosine":  # and it is Eq. 5
        u, c = torch.randn(8, 4, generator=gen), torch.randn(3, 8, 4, generator=gen)
        torch.testing.assert_close(compiled(u, c, 0.2)[0], dns_loss(u, c[0], c[1], c[2], 0.2))


def test_a_failed_compile_warns_once_and_runs_the_eager_loss(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken)
    compiled = CompiledLoss()
    user_e, candidates = torch.randn(10, 8, requires_grad=True), torch.randn(3, 10, 8)
    with pytest.warns(RuntimeWarning, match=r"dns_compile: torch.compile failed on this machine \(RuntimeError: no C\+\+ "
                                            r"compiler found\).*dns_compile: false"):
        loss = compiled(user_e, candidates, 0.2)[0]
    assert compiled.failed == "RuntimeError: no C++ compiler found"
    torch.testing.assert_close(loss, dns_loss_parts(user_e, candidates, 0.2)[0])
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        compiled(user_e, candidates, 0.2)


def test_the_model_uses_the_loss_its_config_asks_for(prepare):
    assert loss_function(False) is dns_loss_parts and isinstance(loss_function(True), CompiledLoss)
    losses = {}
    for flag in (False, True):
        _, trainer, train, _, _ = prepare("BPR_DNS", dns_compile=flag, epochs=1)
        model = trainer.model
        assert model.dns_compile is flag
        model.on_epoch_start(0)
        batch = next(iter(train))
        torch.manual_seed(0)  # the same draw of i'-
        losses[flag] = [t.detach() for t in model.calculate_loss(batch)]
    for a, b in zip(losses[False], losses[True]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
