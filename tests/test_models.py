"""BPR / BPR_DNS: biases, L2 term, prediction unchanged by DNS."""

import pytest
import torch
from recbole.data.interaction import Interaction
from recbole.model.general_recommender.bpr import BPR as RecBoleBPR

from recbole_dns import dns_loss


def _batch(model, size=16, seed=0):
    """A random batch for ``model``, on its device."""
    g = torch.Generator().manual_seed(seed)
    return Interaction({
        "user_id": torch.randint(1, model.n_users, (size,), generator=g),
        "item_id": torch.randint(1, model.n_items, (size,), generator=g),
        "neg_item_id": torch.randint(1, model.n_items, (size,), generator=g),
    }).to(model.device)


def test_bpr_with_biases_scores_b_plus_bu_plus_bi_plus_dot(prepare):
    _, trainer, _, _, _ = prepare("BPR", use_bias=True)
    model = trainer.model
    with torch.no_grad():
        model.user_bias.normal_()
        model.item_bias.normal_()
        model.global_bias.fill_(0.7)
    batch = _batch(model)
    u, i = batch["user_id"], batch["item_id"]
    expected = 0.7 + model.user_bias[u] + model.item_bias[i] + (model.user_embedding(u) * model.item_embedding(i)).sum(-1)
    assert torch.allclose(model.predict(batch), expected, atol=1e-5)
    full = model.full_sort_predict(Interaction({"user_id": u})).view(len(u), -1)
    assert torch.allclose(full[torch.arange(len(u), device=u.device), i], expected, atol=1e-5)


def test_bpr_biases_get_gradients_and_train(prepare):
    _, trainer, train, _, _ = prepare("BPR", use_bias=True, epochs=1, eval_step=0)
    trainer.fit(train, None, saved=False)
    assert trainer.model.item_bias.abs().sum() > 0  # item biases learn under BPR


def test_bpr_without_bias_and_l2_is_recboles_bpr(prepare):
    config, trainer, train, _, _ = prepare("BPR", reg_weight=0.0)
    ours = trainer.model
    theirs = RecBoleBPR(config, train._dataset).to(ours.device)
    theirs.load_state_dict(ours.state_dict())
    batch = _batch(ours)
    assert torch.allclose(ours.calculate_loss(batch), theirs.calculate_loss(batch))
    assert torch.allclose(ours.predict(batch), theirs.predict(batch))


@pytest.mark.parametrize("require_pow", [False, True])
def test_bpr_dns_loss_is_the_dns_loss_plus_l2(prepare, monkeypatch, require_pow):
    config, trainer, _, _, _ = prepare("BPR_DNS", reg_weight=0.01, dns_tau=0.3, require_pow=require_pow)
    model = trainer.model
    batch = _batch(model)
    dns_neg = torch.randint(1, model.n_items, (len(batch),), device=model.device)
    monkeypatch.setattr(model.dns_pool, "sample", lambda users, m=1, items=None: dns_neg)
    main, l2 = model.calculate_loss(batch)
    e = model.user_embedding(batch["user_id"]), *(model.item_embedding(i) for i in (batch["item_id"], batch["neg_item_id"], dns_neg))
    assert main.item() == pytest.approx(dns_loss(*e, 0.3).item(), rel=1e-6)
    # RecBole's EmbLoss: sum of the Frobenius norms / batch, or of their squares / (2 batch)
    ref_l2 = 0.01 * sum(x.norm(p=2) ** (2 if require_pow else 1) for x in e) / len(batch) / (2 if require_pow else 1)
    assert l2.item() == pytest.approx(ref_l2.item(), rel=1e-5)


def test_bpr_dns_predicts_like_bpr(prepare):
    _, t1, _, _, _ = prepare("BPR_DNS", use_bias=True)
    _, t2, _, _, _ = prepare("BPR", use_bias=True)
    t2.model.load_state_dict(t1.model.state_dict())
    batch = _batch(t1.model)
    assert torch.equal(t1.model.predict(batch), t2.model.predict(batch))
    users = Interaction({"user_id": batch["user_id"]})
    assert torch.equal(t1.model.full_sort_predict(users), t2.model.full_sort_predict(users))


def test_bpr_dns_pool_uses_the_bias_columns(prepare):
    _, trainer, _, _, _ = prepare("BPR_DNS", use_bias=True)
    users, items = trainer.model.dns_tables()
    assert users.shape[1] == items.shape[1] == trainer.model.embedding_size + 2
