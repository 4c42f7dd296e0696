"""A model defined outside the package gets a DNS variant in a few lines (the README's example)."""

import glob

import pytest
import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.model.general_recommender import NGCF
from recbole.model.loss import BPRLoss
from recbole.utils import InputType
from torch import nn

from recbole_dns import Config, ConfigError, DNSModel, DNSTrainer, load_data_and_model, register_model, run_recbole_dns

FAST = {"epochs": 2, "show_progress": False, "state": "WARNING", "train_batch_size": 4096, "dns_k": 30}


class TinyMF(GeneralRecommender):
    """A user's own matrix factorisation, as a RecBole user would write it."""

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.user_embedding = nn.Embedding(self.n_users, 16)
        self.item_embedding = nn.Embedding(self.n_items, 16)
        self.loss = BPRLoss()

    def calculate_loss(self, interaction):
        u = self.user_embedding(interaction[self.USER_ID])
        p, n = self.item_embedding(interaction[self.ITEM_ID]), self.item_embedding(interaction[self.NEG_ITEM_ID])
        return self.loss((u * p).sum(-1), (u * n).sum(-1))

    def predict(self, interaction):
        u, i = self.user_embedding(interaction[self.USER_ID]), self.item_embedding(interaction[self.ITEM_ID])
        return (u * i).sum(-1)

    def full_sort_predict(self, interaction):
        return (self.user_embedding(interaction[self.USER_ID]) @ self.item_embedding.weight.t()).view(-1)


# --- the README's recipe: subclass DNSModel, name the tables, register -----------------------------
class TinyMF_DNS(DNSModel, TinyMF):
    def train_tables(self):
        return self.user_embedding.weight, self.item_embedding.weight


class NGCF_DNS(DNSModel, NGCF):
    def train_tables(self):
        return self.forward()

    def extra_losses(self, b):  # NGCF's own L2 term on the final embeddings, with i'- included
        return (self.reg_weight * self.reg_loss(b.user_e, *b.item_embeddings()),)


@pytest.fixture(autouse=True, scope="module")
def _registered():
    """Register the two variants for this module only (the registry is process-wide)."""
    from recbole_dns import models

    saved = dict(models.REGISTERED), dict(models.DNS_VARIANTS)
    register_model(TinyMF_DNS, NGCF_DNS)
    yield
    models.REGISTERED.clear(), models.REGISTERED.update(saved[0])
    models.DNS_VARIANTS.clear(), models.DNS_VARIANTS.update(saved[1])


def test_dns_true_selects_the_users_variant_and_it_trains_and_evaluates(tmp_path):
    config = Config(model="TinyMF", dataset="ml-100k", config_dict={"dns": True}, read_cmd_line=False)
    assert config["model"] == "TinyMF_DNS" and config.model_class is TinyMF_DNS
    result = run_recbole_dns(model="TinyMF", dataset="ml-100k", read_cmd_line=False,
                             config_dict={**FAST, "dns": True, "checkpoint_dir": str(tmp_path)})
    assert 0 < result["test_result"]["ndcg@10"] <= 1
    (path,) = glob.glob(str(tmp_path / "TinyMF_DNS-*.pth"))
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["other_parameter"]["dns_pool"]["pool"].shape == (944, 30)
    # a model class passed directly works too, and without dns the base stays plain
    assert Config(model=TinyMF, dataset="ml-100k", config_dict={"dns": True}, read_cmd_line=False)["model"] == "TinyMF_DNS"
    assert Config(model="TinyMF", dataset="ml-100k", read_cmd_line=False)["model"] == "TinyMF"


def test_the_variant_loss_is_the_dns_loss_on_the_named_tables(prepare):
    from recbole_dns import dns_loss

    _, trainer, train, _, _ = prepare("TinyMF_DNS", dns_tau=0.5, dns_k=10)
    assert isinstance(trainer, DNSTrainer)
    model = trainer.model
    model.on_epoch_start(0)
    batch = next(iter(train)).to(train.config["device"])
    torch.manual_seed(3)
    (loss,) = model.calculate_loss(batch)
    torch.manual_seed(3)
    dns_neg = model.dns_pool.sample(batch["user_id"])
    e = model.user_embedding(batch["user_id"]), *(model.item_embedding(i) for i in (batch["item_id"], batch["neg_item_id"], dns_neg))
    assert loss.item() == pytest.approx(dns_loss(*e, 0.5).item(), rel=1e-6)


def test_a_builtin_recbole_model_gets_a_variant_too(monkeypatch):
    import scipy
    import scipy.sparse as sp

    from recbole_dns.shims import version_at_least

    if version_at_least(scipy.__version__, "1.13"):  # as in a fresh process: shims.py has not restored it yet
        monkeypatch.delattr(sp.dok_matrix, "_update", raising=False)
    result = run_recbole_dns(model="NGCF", dataset="ml-100k", read_cmd_line=False,
                             config_dict={**FAST, "epochs": 1, "dns": True})
    assert 0 < result["test_result"]["ndcg@10"] <= 1


def test_register_model_rejects_what_is_not_a_variant():
    class Orphan_DNS(DNSModel, GeneralRecommender):
        pass

    with pytest.raises(TypeError, match="no base recommender"):
        register_model(Orphan_DNS)
    with pytest.raises(TypeError, match="RecBole model classes"):
        register_model(object)
    with pytest.raises(ConfigError, match="register_model"):
        Config(model="NeuMF", dataset="ml-100k", config_dict={"dns": True}, read_cmd_line=False)


def test_a_dns_checkpoint_loads_into_its_base_for_prediction(tmp_path):
    from recbole.data.interaction import Interaction

    run_recbole_dns(model="BPR_DNS", dataset="ml-100k", read_cmd_line=False,
                    config_dict={**FAST, "epochs": 1, "checkpoint_dir": str(tmp_path)})
    (path,) = glob.glob(str(tmp_path / "BPR_DNS-*.pth"))
    _, dns_model, *_ = load_data_and_model(path)
    config, bpr, *_ = load_data_and_model(path, model="BPR")
    assert config["model"] == "BPR" and type(bpr).__name__ == "BPR" and not config["dns"]
    users = Interaction({"user_id": torch.arange(1, 50)}).to(bpr.device)
    assert torch.equal(bpr.full_sort_predict(users), dns_model.full_sort_predict(users))
