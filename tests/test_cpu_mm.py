"""recbole_dns.shims.cpu_mm: the refresh's and the full sort's CPU product through numpy's OpenBLAS where torch's
MKL is slow; the same numbers as torch.mm, and torch.mm wherever autograd or another device or dtype is involved."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recbole_dns import shims
from recbole_dns.dns.kernel import build_pool


@pytest.fixture
def choice(monkeypatch):
    """Force cpu_mm's path (``torch`` or ``numpy``) for one test; the cached choice is dropped before and after."""

    def force(value: str | None) -> None:
        if value is None:
            monkeypatch.delenv(shims.CPU_MM_ENV, raising=False)
        else:
            monkeypatch.setenv(shims.CPU_MM_ENV, value)
        shims._numpy_blas.cache_clear()

    yield force
    shims._numpy_blas.cache_clear()


def _count_numpy(monkeypatch) -> list:
    calls = []
    real = np.matmul

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(shims.np, "matmul", counted)
    return calls


def test_numpy_path_equals_torch_mm(choice, monkeypatch):
    choice("numpy")
    calls = _count_numpy(monkeypatch)
    g = torch.Generator().manual_seed(0)
    a, items = torch.randn(300, 64, generator=g), torch.randn(500, 64, generator=g)
    out = torch.empty(300, 500)
    got = shims.cpu_mm(a, items.t(), out=out)  # a transposed view, as the refresh passes it
    assert got.data_ptr() == out.data_ptr() and calls == [1]
    torch.testing.assert_close(got, torch.mm(a, items.t()), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(shims.cpu_mm(a[:7], items.t()), torch.mm(a[:7], items.t()), rtol=1e-5, atol=1e-5)


def test_products_autograd_records_stay_torch(choice, monkeypatch):
    choice("numpy")
    calls = _count_numpy(monkeypatch)
    w = torch.nn.Parameter(torch.randn(5, 3))
    x = torch.randn(4, 3)
    y = shims.cpu_mm(x, w.t())
    assert y.grad_fn is not None and calls == []
    y.sum().backward()
    torch.testing.assert_close(w.grad, x.sum(0).expand(5, 3))
    with torch.no_grad():  # a parameter under no_grad (evaluation): numpy
        shims.cpu_mm(x, w.t())
    assert calls == [1]
    shims.cpu_mm(x.double(), w.detach().double().t())  # another dtype: torch
    assert calls == [1]


def test_automatic_choice_follows_cpu_vendor(choice, monkeypatch):
    choice(None)
    monkeypatch.setattr(shims, "_cpu_vendor", lambda: "GenuineIntel")
    assert shims._numpy_blas() is None
    shims._numpy_blas.cache_clear()
    monkeypatch.setattr(shims, "_cpu_vendor", lambda: "AuthenticAMD")
    assert (shims._numpy_blas() is not None) == torch.backends.mkl.is_available()
    choice("torch")
    assert shims._numpy_blas() is None


def test_bad_choice_names_the_variable(choice):
    choice("mkl")
    with pytest.raises(ValueError, match="RECBOLE_DNS_CPU_MM must be torch or numpy"):
        shims.cpu_mm(torch.ones(2, 2), torch.ones(2, 2))


@pytest.mark.parametrize("sampler,skip", [("dissimilar", 0), ("similar", 5)])
def test_pool_is_the_same_through_either_product(choice, sampler, skip):
    g = torch.Generator().manual_seed(1)
    users, items = torch.randn(120, 16, generator=g), torch.randn(400, 16, generator=g)
    rng = np.random.default_rng(1)
    exclude = sp.random(120, 400, density=0.05, format="csr", random_state=rng)
    pools = []
    for path in ("torch", "numpy"):
        choice(path)
        pools.append(build_pool(users, items, exclude, 20, sampler, chunk_size=32, skip=skip))
    assert torch.equal(pools[0], pools[1])
