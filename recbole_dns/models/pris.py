"""PRIS: personalised ranking with importance sampling.

Lian, Liu and Chen, "Personalized Ranking with Importance Sampling", WWW 2020.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction

from recbole_dns.errors import ConfigError
from recbole_dns.models.bpr import BPR
from recbole_dns.sampling import ExclusionIndex, exclusion_matrix

PROPOSALS = ("uniform", "popularity", "cluster")


class PRIS(BPR):
    """Matrix factorisation trained with an importance-weighted BPR loss.

    Every positive gets ``n_negs`` negatives from a proposal ``q`` (interacted items rejected):

    * ``uniform``;
    * ``popularity``: ``q_j`` proportional to ``log(pop_j + 1)`` (training counts);
    * ``cluster``: items are clustered by k-means on their embeddings (``n_clusters``, rebuilt every
      ``cluster_interval`` epochs); a cluster is drawn with probability proportional to
      ``|unseen items of u in c| * exp(u . center_c)``, then an unseen item uniformly within it.

    Loss: ``-sum_j w_j log sigmoid(r_ui - r_uj)`` with ``w = softmax_j(r_uj - log q_j)`` computed without
    gradient, mean over positives, plus BPR's L2 term over the user, the positive and all ``n_negs``
    negatives, per training instance (as BPR's, so ``reg_weight`` means the same in both). The backbone is this package's BPR (dot product,
    optional biases). Defaults (5 negatives, cluster proposal, 16 clusters rebuilt every 5 epochs) are
    this package's choice: the paper tunes them per dataset. Prediction is the dot product.
    """

    own_negatives = True  # draws its own candidates (n_negs): hard_neg does not apply

    loss_terms = ("pris", "l2")  # what calculate_loss returns, for error messages

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        if config["num_negs"] is not None:  # the key's name before 2026-12-01
            raise ConfigError("config key 'num_negs' is now 'n_negs' (negatives per positive, as MixGCF's)")
        self.n_negs = int(config["n_negs"])
        self.proposal = config["proposal"]
        if self.n_negs < 1:
            raise ConfigError(f"config key 'n_negs' must be an integer >= 1; got {self.n_negs}")
        if self.proposal not in PROPOSALS:
            raise ConfigError(f"config key 'proposal' must be one of {' | '.join(PROPOSALS)}; got {self.proposal!r}")
        self.n_clusters = int(config["n_clusters"])
        self.cluster_interval = int(config["cluster_interval"])
        self.exclude = exclusion_matrix(dataset)
        self.exclusion = ExclusionIndex(self.exclude, self.device)
        pop = np.asarray(dataset.inter_matrix(form="csr").sum(axis=0)).ravel()
        pop[0] = 0
        self.log_pop = torch.as_tensor(np.log1p(pop), dtype=torch.float32, device=self.device)
        self.item_cluster = None  # [n_items], -1 for the padding item
        self.centers = None  # [C, d]
        self.unseen = None  # [n_users, C] unseen items of each user per cluster
        self.train_calls = 0
        self.members = self.offsets = None  # items sorted by cluster, and each cluster's start
        self.other_parameter_name = ["item_cluster", "centers", "unseen", "members", "offsets", "train_calls"]

    # ---- proposals -------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "PRIS":
        """The Trainer calls ``train()`` once per epoch: the clusters are rebuilt every ``cluster_interval``."""
        out = super().train(mode)
        if mode and self.proposal == "cluster":
            if self.item_cluster is None or self.train_calls % self.cluster_interval == 0:
                self.build_clusters()
            self.train_calls += 1
        return out

    @torch.no_grad()
    def build_clusters(self) -> None:
        """k-means (scikit-learn) of the item vectors; per-user unseen counts per cluster."""
        from sklearn.cluster import KMeans

        items = self.item_table()[1:].detach().float().cpu().numpy()
        n_clusters = min(self.n_clusters, len(items))
        km = KMeans(n_clusters=n_clusters, n_init=1, max_iter=20, random_state=int(torch.randint(2**31 - 1, (1,))))
        labels = km.fit_predict(items)
        assign = np.concatenate([[-1], labels]).astype(np.int64)
        member = sp.csr_matrix(
            (np.ones(len(labels), dtype=np.float32), (np.arange(1, len(assign)), labels)), shape=(len(assign), n_clusters)
        )
        seen = (sp.csr_matrix(self.exclude) @ member).toarray()  # item 0 belongs to no cluster
        size = np.bincount(labels, minlength=n_clusters)
        self.item_cluster = torch.as_tensor(assign, device=self.device)
        self.centers = torch.as_tensor(km.cluster_centers_, dtype=torch.float32, device=self.device)
        self.unseen = torch.as_tensor(size[None, :] - seen, dtype=torch.float32, device=self.device)
        order = np.argsort(assign[1:], kind="stable") + 1
        self.members = torch.as_tensor(order, device=self.device)
        self.offsets = torch.as_tensor(np.concatenate([[0], np.cumsum(size)]), device=self.device)

    def _cluster_logits(self, users: torch.Tensor) -> torch.Tensor:
        """``[U, C]`` log of ``|unseen(u, c)| * exp(u . center_c)`` (-inf for clusters with nothing unseen)."""
        affinity = self.user_table(users) @ self.centers.t()
        return affinity + torch.log(self.unseen[users])

    @torch.no_grad()
    def proposal_probs(self, users: torch.Tensor) -> torch.Tensor:
        """``[U, n_items]`` exact proposal probabilities over each user's allowed items."""
        allowed = self.exclusion.allowed_mask(users).float()
        if self.proposal == "uniform":
            weight = allowed
        elif self.proposal == "popularity":
            weight = allowed * self.log_pop
        else:
            if self.item_cluster is None:
                self.build_clusters()
            log_pc = torch.log_softmax(self._cluster_logits(users), dim=1)  # P(c | u)
            c = self.item_cluster.clamp_min(0)
            per_item = torch.exp(log_pc[:, c] - torch.log(self.unseen[users][:, c].clamp_min(1)))
            weight = allowed * per_item
        return weight / weight.sum(dim=1, keepdim=True)

    @torch.no_grad()
    def sample_negatives(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``n_negs`` negatives per user from the proposal, and their ``log q`` (up to a per-user constant)."""
        m, device = self.n_negs, users.device
        if self.proposal == "uniform":
            items = self.exclusion.sample(users, m, exact=self.proposal_probs)
            return items, torch.zeros(items.shape, device=device)
        if self.proposal == "popularity":
            def draw(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
                return torch.multinomial(self.log_pop, rows.numel(), replacement=True)

            items = self.exclusion.sample(users, m, draw, exact=self.proposal_probs)
            return items, torch.log(self.log_pop[items])
        if self.item_cluster is None:
            self.build_clusters()
        logits = self._cluster_logits(users)
        clusters = torch.multinomial(torch.softmax(logits, dim=1), m, replacement=True)  # [B, m]
        start, size = self.offsets[clusters], self.offsets[clusters + 1] - self.offsets[clusters]

        def draw(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
            # uniform within the position's cluster; seen items are redrawn there
            pick = (torch.rand(rows.shape, device=device) * size[rows, cols]).long()
            return self.members[start[rows, cols] + pick]

        items = self.exclusion.sample(users, m, draw, exact=self.proposal_probs)
        log_q = torch.log_softmax(logits, dim=1).gather(1, clusters) - torch.log(self.unseen[users.unsqueeze(1), clusters])
        return items, log_q

    # ---- loss ------------------------------------------------------------------------------------
    @staticmethod
    def importance_weights(neg_scores: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        """``softmax_j(r_uj - log q_j)`` per positive, without gradient."""
        return torch.softmax(neg_scores.detach() - log_q, dim=1)

    def calculate_loss(self, interaction: Interaction) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        user, pos = interaction[self.USER_ID], interaction[self.ITEM_ID]
        negs, log_q = self.sample_negatives(user)
        user_e, pos_e, neg_e = self.user_table(user), self.item_table(pos), self.item_table(negs)
        pos_score = (user_e * pos_e).sum(-1, keepdim=True)
        neg_score = (user_e.unsqueeze(1) * neg_e).sum(-1)  # [B, m]
        w = self.importance_weights(neg_score, log_q)
        loss = -(w * F.logsigmoid(pos_score - neg_score)).sum(dim=1).mean()
        if self.reg_weight:
            return loss, self.l2_loss(user_e, pos_e, neg_e.reshape(-1, neg_e.shape[-1]))
        return loss
