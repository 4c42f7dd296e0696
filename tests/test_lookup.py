"""recbole_dns.shims.lookup: an embedding lookup whose CPU backward is one ``index_add_``, equal to F.embedding's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recbole_dns import shims


@pytest.mark.parametrize("rows, width, ids_shape, dtype", [
    (50, 64, (3, 700), torch.float32),  # many repeats of each row, stacked columns as the DNS loss looks them up
    (1000, 66, (256,), torch.float32),  # BPR's bias columns
    (7, 3, (2, 5, 4), torch.float64),
])
def test_lookup_values_and_gradients_equal_f_embedding_bitwise(rows, width, ids_shape, dtype):
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(rows, width, dtype=dtype, generator=gen)
    ids = torch.randint(rows, ids_shape, generator=gen)
    upstream = torch.randn(*ids_shape, width, dtype=dtype, generator=gen)
    ours, ref = table.clone().requires_grad_(), table.clone().requires_grad_()
    out = shims.lookup(ids, ours)
    expected = F.embedding(ids, ref)
    assert out.grad_fn is not None and "CpuLookup" in type(out.grad_fn).__name__
    assert torch.equal(out, expected)
    (out * upstream).sum().backward()
    (expected * upstream).sum().backward()
    assert torch.equal(ours.grad, ref.grad)  # the same rows summed in the same order
    assert ours.grad.abs().sum() > 0


def test_lookup_is_f_embedding_without_a_gradient_to_compute():
    table = torch.randn(10, 4)
    ids = torch.tensor([[1, 2], [3, 3]])
    plain = shims.lookup(ids, table)  # the table needs no gradient
    assert plain.grad_fn is None and torch.equal(plain, F.embedding(ids, table))
    with torch.no_grad():
        assert shims.lookup(ids, table.requires_grad_()).grad_fn is None


def test_lookup_out_of_range_id_is_an_index_error_as_f_embedding():
    table = torch.randn(5, 3, requires_grad=True)
    with pytest.raises(IndexError):
        F.embedding(torch.tensor([5]), table)
    with pytest.raises(IndexError):
        shims.lookup(torch.tensor([5]), table)
