import numpy as np
import pytest
import torch

from eagle_cli.expert.knn import BankIndex

CPU = torch.device("cpu")


def _bank(n_images=6, per_image=40, dim=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    bank = torch.randn(n_images * per_image, dim, generator=g)
    ids = torch.arange(n_images).repeat_interleave(per_image)
    return bank, ids


@pytest.mark.parametrize("k", [1, 3])
def test_faiss_and_torch_return_the_same_neighbours(k):
    bank, ids = _bank()
    queries = torch.randn(200, 32, generator=torch.Generator().manual_seed(1))
    d_faiss, r_faiss = BankIndex(bank, ids, backend="faiss", device=CPU).search(queries, k)
    d_torch, r_torch = BankIndex(bank, ids, backend="torch", device=CPU).search(queries, k)
    assert np.array_equal(r_faiss, r_torch)
    np.testing.assert_allclose(d_faiss, d_torch, rtol=1e-4, atol=1e-3)
    exact = torch.cdist(queries, bank).square().topk(k, largest=False)
    assert np.array_equal(r_faiss, exact.indices.numpy())


@pytest.mark.parametrize("extra", [0, 2, 50])
def test_leave_own_out_never_returns_the_own_image_and_matches_an_exact_search(extra):
    bank, ids = _bank()
    # Queries sit right next to bank rows of their own image, so the own image wins a plain search.
    owners = np.repeat(np.arange(6), 10)
    rows = np.concatenate([np.flatnonzero(ids.numpy() == o)[:10] for o in range(6)])
    queries = bank[rows] + 0.01
    faiss_index = BankIndex(bank, ids, backend="faiss", device=CPU)
    dist, listed, fallback = faiss_index.search_leave_own_out(queries, 2, owners, extra=extra)
    exact, listed_torch, _ = BankIndex(bank, ids, backend="torch", device=CPU).search_leave_own_out(
        queries, 2, owners, extra=extra)
    assert listed.shape == (60, 2 + extra) and np.array_equal(listed[:, 0], rows)  # faiss lists the own row first
    assert listed_torch.shape == (60, 2) and (ids.numpy()[listed_torch] != owners[:, None]).all()
    np.testing.assert_allclose(dist, exact, rtol=1e-4, atol=1e-3)
    assert (dist > 0.5).all()  # the 0.01-away own neighbour was excluded
    # With no extra neighbours every row needs the exact fallback; with many, none does.
    if extra == 0:
        assert fallback == 60
    if extra == 50:
        assert fallback == 0
