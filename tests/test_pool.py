"""build_pool against a brute-force numpy reference."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recbole_dns import build_pool
from recbole_dns.dns.kernel import CPU_CHUNK_MB, CPU_CHUNK_MIN_USERS, blocked_topk, chunk_size_for, topk_blocks


def _random_case(n_users=37, n_items=53, d=8, density=0.2, seed=0):
    rng = np.random.default_rng(seed)
    user = rng.normal(size=(n_users, d)).astype(np.float32)
    item = rng.normal(size=(n_items, d)).astype(np.float32)
    mask = rng.random((n_users, n_items)) < density
    mask[:, 0] = True  # padding item
    return user, item, sp.csr_matrix(mask.astype(np.float32))


def _reference(user, item, exclude, k, largest):
    """Brute force: cosine of every pair, excluded pairs dropped, sort per user."""
    un = user / np.linalg.norm(user, axis=1, keepdims=True)
    it = item / np.linalg.norm(item, axis=1, keepdims=True)
    cos = un @ it.T
    dense = exclude.toarray() > 0
    out = []
    for u in range(len(user)):
        allowed = np.flatnonzero(~dense[u])
        order = allowed[np.argsort(cos[u, allowed])]
        if largest:
            order = order[::-1]
        out.append(set(order[:k].tolist()))
    return out


@pytest.mark.parametrize("sampler,largest", [("dissimilar", False), ("similar", True)])
@pytest.mark.parametrize("chunk_size", [None, 1, 5, 1000])
def test_dissimilar_and_similar_match_brute_force(sampler, largest, chunk_size):
    user, item, exclude = _random_case()
    k = 10
    pool = build_pool(torch.from_numpy(user), torch.from_numpy(item), exclude, k, sampler, chunk_size)
    assert pool.shape == (len(user), k) and pool.dtype == torch.long
    ref = _reference(user, item, exclude, k, largest)
    dense = exclude.toarray() > 0
    for u in range(len(user)):
        row = pool[u].tolist()
        assert set(row) == ref[u], f"user {u}"
        assert len(set(row)) == k
        assert not dense[u, row].any()


def test_dissimilar_is_the_lowest_cosine_not_the_lowest_dot():
    # item 1 has the lowest dot product (long vector) but item 2 the lowest cosine
    user = torch.tensor([[1.0, 0.0]])
    item = torch.tensor([[0.0, 0.0], [-10.0, 10.0], [-1.0, 0.1], [1.0, 0.0]])
    exclude = sp.csr_matrix(np.array([[1, 0, 0, 0]], dtype=np.float32))
    assert build_pool(user, item, exclude, 1).tolist() == [[2]]
    assert build_pool(user, item, exclude, 1, "similar").tolist() == [[3]]


def test_random_sampler_distinct_allowed_and_uniform():
    user, item, exclude = _random_case(n_users=20, n_items=40, density=0.3, seed=1)
    torch.manual_seed(0)
    dense = exclude.toarray() > 0
    counts = np.zeros((20, 40))
    draws = 400
    for _ in range(draws):
        pool = build_pool(torch.from_numpy(user), torch.from_numpy(item), exclude, 5, "random", chunk_size=7)
        for u in range(20):
            row = pool[u].numpy()
            assert len(set(row.tolist())) == 5
            assert not dense[u, row].any()
            counts[u, row] += 1
    # every allowed item is drawn with probability k / n_allowed
    for u in range(20):
        allowed = ~dense[u]
        expected = draws * 5 / allowed.sum()
        assert np.all(np.abs(counts[u, allowed] - expected) < 5 * np.sqrt(expected)), u
    # two refreshes differ (it is random, not a fixed order)
    a = build_pool(torch.from_numpy(user), torch.from_numpy(item), exclude, 5, "random")
    b = build_pool(torch.from_numpy(user), torch.from_numpy(item), exclude, 5, "random")
    assert not torch.equal(a, b)


@pytest.mark.parametrize("sampler", ["dissimilar", "similar", "random"])
def test_chunked_equals_unchunked(sampler):
    user, item, exclude = _random_case(n_users=101, n_items=67, seed=3)
    u, i = torch.from_numpy(user), torch.from_numpy(item)
    torch.manual_seed(5)
    whole = build_pool(u, i, exclude, 12, sampler, chunk_size=10**6)
    for chunk in (1, 3, 50):
        torch.manual_seed(5)
        chunked = build_pool(u, i, exclude, 12, sampler, chunk_size=chunk)
        if sampler == "random":  # same distribution, not the same draws: check validity only
            dense = exclude.toarray() > 0
            assert not any(dense[r, chunked[r].numpy()].any() for r in range(101))
        else:
            assert torch.equal(whole, chunked)


def test_user_with_fewer_than_k_allowed_items_gets_repeats_and_one_warning():
    user = torch.randn(3, 4)
    item = torch.randn(6, 4)
    mask = np.zeros((3, 6), dtype=np.float32)
    mask[:, 0] = 1
    mask[1, :4] = 1  # user 1: items 4 and 5 allowed only
    with pytest.warns(RuntimeWarning, match="1 of 3 users have fewer than k=4"):
        pool = build_pool(user, item, sp.csr_matrix(mask), 4)
    assert set(pool[1].tolist()) == {4, 5}
    assert sorted(pool[1].tolist()) == [4, 4, 5, 5]
    assert len(set(pool[0].tolist())) == 4 and 0 not in pool[0].tolist()


def test_k_larger_than_catalogue_repeats():
    user, item = torch.randn(2, 3), torch.randn(4, 3)
    exclude = sp.csr_matrix(np.array([[1, 0, 0, 0], [1, 1, 0, 0]], dtype=np.float32))
    with pytest.warns(RuntimeWarning):
        pool = build_pool(user, item, exclude, 7, "similar")
    assert pool.shape == (2, 7)
    assert set(pool[0].tolist()) == {1, 2, 3} and set(pool[1].tolist()) == {2, 3}


def test_user_with_no_allowed_item_is_an_error():
    exclude = sp.csr_matrix(np.array([[1, 0, 0], [1, 1, 1]], dtype=np.float32))
    with pytest.raises(ValueError, match="no item left"):
        build_pool(torch.randn(2, 3), torch.randn(3, 3), exclude, 1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"k": 0}, "k must be an integer >= 1"),
        ({"k": 2.5}, "k must be an integer >= 1"),
        ({"sampler": "hard"}, "sampler must be one of dissimilar, similar, random"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"k": 2, "sampler": "dissimilar"} | kwargs
    exclude = sp.csr_matrix((2, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=match):
        build_pool(torch.randn(2, 3), torch.randn(3, 3), exclude, args["k"], args["sampler"])


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="exclude must have shape"):
        build_pool(torch.randn(2, 3), torch.randn(4, 3), sp.csr_matrix((2, 3)), 1)


def test_duplicate_entries_in_exclude_are_counted_once():
    # a COO with a repeated (user, item) entry must not make the user look short of items
    exclude = sp.csr_matrix(
        (np.ones(3, dtype=np.float32), (np.array([0, 0, 0]), np.array([0, 1, 1]))), shape=(1, 4)
    )
    pool = build_pool(torch.randn(1, 2), torch.randn(4, 2), exclude, 2)
    assert set(pool[0].tolist()) == {2, 3}


@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("ordered", [True, False])
@pytest.mark.parametrize("width,k,blocks", [(60, 15, (2,)), (1003, 12, (10,)), (999, 40, (3,)), (65, 32, (2,)),
                                            (40, 3, (7,)), (1003, 10, (5, 4)), (4001, 20, (6, 5)), (130, 7, (3, 2))])
def test_blocked_topk_equals_torch_topk(largest, ordered, width, k, blocks):
    gen = torch.Generator().manual_seed(width + k)
    scores = torch.randn(23, width, generator=gen)
    fill = -math.inf if largest else math.inf
    scores[3, : width - k // 2] = fill  # a row with fewer than k finite scores
    scores[5, ::3] = fill  # excluded columns in an ordinary row
    ref = torch.topk(scores, k, dim=1, largest=largest, sorted=True)
    got = blocked_topk(scores, k, largest, blocks, ordered)
    finite = torch.isfinite(ref.values)
    if ordered:
        assert torch.equal(scores.gather(1, got), ref.values)
        assert torch.equal(got[finite], ref.indices[finite])  # no ties among the finite scores: the same items
    else:  # the same items, in any order
        assert torch.equal(scores.gather(1, got).sort(1, descending=largest).values, ref.values)
        rows = finite.all(1)
        assert torch.equal(got[rows].sort(1).values, ref.indices[rows].sort(1).values)
    assert torch.equal(blocked_topk(scores, k, largest, ()), ref.indices)


def test_topk_blocks_are_one_level_of_about_sqrt_width_over_k_or_two_nested_on_the_cpu_only():
    assert topk_blocks(12102, 150, "cpu") == (4, 4) and topk_blocks(40981, 150, "cpu") == (6, 7)  # ratios 81, 273
    assert topk_blocks(12102, 100, "cpu") == (5, 5) and topk_blocks(10**6, 100, "cpu") == (22, 21)
    assert topk_blocks(1682, 100, "cpu") == (4,)  # ratio 17: one level
    assert topk_blocks(53, 10, "cpu") == (2,)  # the brute-force cases above take the blocked path
    assert topk_blocks(200, 150, "cpu") == () and topk_blocks(12102, 150, "cuda") == ()


def test_chunks_are_cache_sized_on_the_cpu_and_as_large_as_the_memory_bound_elsewhere():
    # amazon-beauty's 12,102 items: dns_refresh_mb 256 allows 2,772 users (8 bytes a score); the CPU keeps a
    # chunk's float32 scores to CPU_CHUNK_MB (16 MiB: 346 users); a smaller memory bound still wins
    assert chunk_size_for(12102, 256) == chunk_size_for(12102, 256, "cuda") == 2772
    assert chunk_size_for(12102, 256, "cpu") == CPU_CHUNK_MB * 2**20 // (4 * 12102) == 346
    assert chunk_size_for(12102, 8, "cpu") == 86
    # a large catalogue: at least CPU_CHUNK_MIN_USERS users (64) while the memory bound allows them, else that bound
    assert chunk_size_for(10**5, 256, "cpu") == CPU_CHUNK_MIN_USERS == 64 and chunk_size_for(10**6, 256, "cpu") == 33
    assert chunk_size_for(10**8, 256, "cpu") == 1  # at least one user

@pytest.mark.parametrize("sampler,largest", [("dissimilar", False), ("similar", True)])
def test_blocked_refresh_with_a_tail_of_columns_matches_brute_force(sampler, largest):
    # 1003 items, k 10: blocks 5 then 4, the last 3 columns in no block at the first level, 200 % 4 = 0 at the
    # second; user 2 keeps only 6 allowed items
    user, item, exclude = _random_case(n_users=41, n_items=1003, d=6, density=0.05, seed=7)
    dense = exclude.toarray() > 0
    dense[2, :-6] = True
    exclude = sp.csr_matrix(dense.astype(np.float32))
    assert topk_blocks(1003, 10, "cpu") == (5, 4)
    with pytest.warns(RuntimeWarning, match="1 of 41 users have fewer than k=10"):
        pool = build_pool(torch.from_numpy(user), torch.from_numpy(item), exclude, 10, sampler, chunk_size=16)
    ref = _reference(user, item, exclude, 10, largest)
    assert int(pool.max()) < 1003
    for u in range(41):
        assert set(pool[u].tolist()) == ref[u], f"user {u}"


@pytest.mark.parametrize("m", [1, 3])
def test_batch_draw_takes_random_columns_of_each_users_own_row(m):
    from recbole_dns.dns import DNSPool

    exclude = sp.csr_matrix((5, 40), dtype=np.float32)
    pool = DNSPool(exclude, n=1, k=7)
    pool.pool = torch.arange(5 * 7).view(5, 7) + 100  # row u holds 100 + 7u .. 100 + 7u + 6
    users = torch.tensor([4, 0, 4, 2, 1, 3, 3])
    torch.manual_seed(5)
    drawn = pool.sample(users, m)
    torch.manual_seed(5)
    cols = torch.randint(7, (len(users), m))  # the same random columns, read by 2-D indexing
    expected = pool.pool[users.unsqueeze(1), cols]
    assert torch.equal(drawn, expected.squeeze(1) if m == 1 else expected)
    rows = (drawn.view(len(users), -1) - 100) // 7
    assert torch.equal(rows, users.unsqueeze(1).expand_as(rows))  # each instance draws from its own user's row
