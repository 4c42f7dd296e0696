"""dns_index: the IVF pool against the exact pool (build_pool) and a brute-force reference."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recbole_dns import build_pool
from recbole_dns.dns import DNSPool, index_pool, resolve_index
from recbole_dns.dns.index import AUTO_MIN_ITEMS, build_ivf, n_lists
from recbole_dns.errors import ConfigError


def _clustered_case(n_users=300, n_items=4000, d=16, per_user=30, seed=0):
    """Tables with the structure trained ones have (clusters), and random exclusions plus padding item 0."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, d))
    item = centres[rng.integers(20, size=n_items)] + 0.4 * rng.normal(size=(n_items, d))
    user = centres[rng.integers(20, size=n_users)] + 0.4 * rng.normal(size=(n_users, d))
    rows = np.repeat(np.arange(n_users), per_user + 1)
    cols = rng.integers(1, n_items, size=(n_users, per_user + 1))
    cols[:, 0] = 0
    exclude = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols.ravel())), shape=(n_users, n_items))
    exclude.sum_duplicates()
    return torch.tensor(user, dtype=torch.float32), torch.tensor(item, dtype=torch.float32), exclude


def _brute_force_band(user, item, exclude, k, skip, largest):
    un = torch.nn.functional.normalize(user, dim=1).numpy()
    it = torch.nn.functional.normalize(item, dim=1).numpy()
    cos = un @ it.T
    dense = exclude.toarray() > 0
    out = []
    for u in range(len(un)):
        allowed = np.flatnonzero(~dense[u])
        order = allowed[np.argsort(-cos[u, allowed] if largest else cos[u, allowed], kind="stable")]
        out.append(order[skip : skip + k].tolist())
    return out


def sorted_rows(rows):
    return [sorted(r) for r in rows]


@pytest.mark.parametrize("sampler,skip", [("dissimilar", 0), ("similar", 0), ("similar", 50)])
def test_ivf_probing_every_list_is_the_exact_pool(sampler, skip):
    user, item, exclude = _clustered_case()
    k = 100
    got = index_pool(user, item, exclude, k, sampler, skip=skip, nprobe=10**6)
    ref = _brute_force_band(user, item, exclude, k, skip, sampler == "similar")
    assert got.shape == (len(user), k) and got.dtype == torch.long
    # the same items (their order within the band may differ where two cosines differ in the last bits)
    assert got.sort(1).values.tolist() == sorted_rows(ref)
    assert torch.equal(got.sort(1).values, build_pool(user, item, exclude, k, sampler, skip=skip).sort(1).values)


@pytest.mark.parametrize("sampler,skip", [("dissimilar", 0), ("similar", 20)])
def test_ivf_with_few_lists_is_the_exact_band_among_the_probed_lists(sampler, skip):
    user, item, exclude = _clustered_case(seed=1)
    k, nprobe = 100, 8
    got = index_pool(user, item, exclude, k, sampler, skip=skip, nprobe=nprobe)
    # brute force: each user's nprobe lists of highest centroid score (negated user for dissimilar), every allowed
    # item of those lists ranked by cosine
    ivf = build_ivf(torch.nn.functional.normalize(item, dim=1))
    query = torch.nn.functional.normalize(user, dim=1) * (-1 if sampler == "dissimilar" else 1)
    probed = torch.topk(query @ ivf.centroids.t(), nprobe, dim=1).indices.numpy()
    cos = (query @ torch.nn.functional.normalize(item, dim=1).t()).numpy()
    dense = exclude.toarray() > 0
    list_of = ivf.list_of.numpy()
    for u in range(len(user)):
        allowed = np.flatnonzero(~dense[u] & np.isin(list_of, probed[u]))
        ref = allowed[np.argsort(-cos[u, allowed], kind="stable")][skip : skip + k]
        assert sorted(got[u].tolist()) == sorted(ref.tolist()), u
    exact = build_pool(user, item, exclude, k, sampler, skip=skip)
    recall = (got.unsqueeze(2) == exact.unsqueeze(1)).any(2).float().mean().item()
    assert recall > 0.8  # 8 of 63 lists scanned, yet mostly the exact pool
    assert n_lists(item.shape[0]) == 63 and n_lists(10**6) == 1000


@pytest.mark.parametrize("sampler,skip", [("dissimilar", 0), ("similar", 3)])
def test_a_catalogue_of_one_list_is_the_exact_pool(sampler, skip, capfd):
    user, item, exclude = _clustered_case(n_users=12, n_items=30, d=4, per_user=5)
    got = index_pool(user, item, exclude, 5, sampler, skip=skip, nprobe=1)
    assert n_lists(30) == 1
    ref = _brute_force_band(user, item, exclude, 5, skip, sampler == "similar")
    assert got.sort(1).values.tolist() == sorted_rows(ref)
    printed = capfd.readouterr()
    assert "WARNING" not in printed.out + printed.err  # no clustering, so no complaint from faiss about few points


def test_users_the_index_cannot_serve_get_the_exact_row():
    # user 0 may use 120 items only: fewer than skip + k = 150, so the band is cut as build_pool cuts it
    user, item, exclude = _clustered_case(n_users=20, n_items=2000)
    dense = exclude.toarray()
    dense[0, 120:] = 1
    exclude = sp.csr_matrix(dense)
    got = index_pool(user, item, exclude, 100, "similar", skip=50, nprobe=1)
    exact = build_pool(user, item, exclude, 100, "similar", skip=50)
    assert torch.equal(got[0], exact[0])
    assert not (dense[np.arange(20)[:, None], got.numpy()] > 0).any()


def test_shards_of_the_ivf_pool_are_the_one_process_pool():
    user, item, exclude = _clustered_case(n_users=90)
    one = DNSPool(exclude, n=1, k=40, sampler="dissimilar", index="ivf", nprobe=4)
    whole = one.build_shard(user, item)
    shards = torch.cat([one.build_shard(user, item, rank, 3) for rank in range(3)])
    assert one.index_used == "ivf"
    assert torch.equal(whole, shards)


def test_auto_picks_the_index_for_large_catalogues_on_the_cpu_only():
    assert resolve_index("auto", AUTO_MIN_ITEMS - 1, "cpu", "dissimilar") == "exact"
    assert resolve_index("auto", AUTO_MIN_ITEMS, "cpu", "dissimilar") == "ivf"
    assert resolve_index("auto", AUTO_MIN_ITEMS, "cpu", "random") == "exact"
    assert resolve_index("ivf", 10, "cpu", "similar") == "ivf"
    with pytest.raises(ValueError, match="dns_index must be one of auto, exact, ivf; got 'hnsw'"):
        resolve_index("hnsw", 10, "cpu", "similar")
    with pytest.raises(ValueError, match="similar and dissimilar"):
        index_pool(torch.ones(2, 2), torch.ones(5, 2), sp.csr_matrix((2, 5)), 1, "random")


@pytest.mark.parametrize("key,value,allowed", [("dns_index", "hnsw", "auto | exact | ivf"),
                                               ("dns_index_nprobe", 0, "an integer >= 1")])
def test_bad_index_keys_are_config_errors(prepare, key, value, allowed):
    with pytest.raises(ConfigError, match=f"config key '{key}' must be {allowed}; got"):
        prepare("BPR_DNS", **{key: value})


def test_bpr_dns_trains_with_the_index(prepare):
    config, trainer, train, valid, test = prepare("BPR_DNS", dns_index="ivf", epochs=1)
    trainer.fit(train, valid, saved=False, show_progress=False)
    model = trainer.model
    pool = model.dns_pool
    assert pool.index_used == "ivf" and pool.refreshes == 1
    with torch.no_grad():
        tables = model.dns_tables()
    model.dns_pool.refresh(*tables, epoch=1)  # the trained tables, through the index and exactly
    exact = build_pool(*tables, pool.exclude, pool.k, pool.sampler, skip=pool.skip)
    recall = (pool.pool.unsqueeze(2) == exact.unsqueeze(1)).any(2).float().mean().item()
    assert 0.85 < recall < 1.0  # 32 of its 41 lists (after one epoch the tables are still close to random)
