import subprocess
import sys

import numpy as np
import pytest
import torch

from eagle_cli.errors import ParameterError
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


def _interleaved_bank():
    """Images' entries interleaved, as a coreset selects them."""
    bank, ids = _bank()
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(2))
    return bank[order], ids[order]


@pytest.mark.parametrize("k", [1, 3])
def test_leave_own_out_is_the_exact_search_among_the_other_images_entries(k):
    bank, ids = _interleaved_bank()
    owners = np.repeat(np.arange(6), 10)  # the first and the last image too: other entries on one side only
    rows = np.concatenate([np.flatnonzero(ids.numpy() == o)[:10] for o in range(6)])
    queries = bank[rows] + 0.01  # right next to an own entry, which a plain search would return
    exact = torch.cdist(queries, bank).square().masked_fill_(
        torch.as_tensor(ids.numpy()[None, :] == owners[:, None]), float("inf")).topk(k, largest=False)
    for backend in ("faiss", "torch"):
        dist, found = BankIndex(bank, ids, backend=backend, device=CPU).search_leave_own_out(queries, k, owners)
        assert np.array_equal(found, exact.indices.numpy())
        np.testing.assert_allclose(dist, exact.values.numpy(), rtol=1e-4, atol=1e-3)
        assert (dist > 0.5).all()  # the 0.01-away own neighbour was excluded


def test_an_image_without_entries_searches_the_whole_bank_and_too_few_others_is_refused():
    bank, ids = _interleaved_bank()
    index = BankIndex(bank, ids, backend="faiss", device=CPU)
    queries = torch.randn(20, 32, generator=torch.Generator().manual_seed(3))
    dist, found = index.search_leave_own_out(queries, 2, np.full(20, 99))  # image 99 has no entry in the bank
    plain = index.search(queries, 2)
    assert np.array_equal(found, plain[1])
    np.testing.assert_allclose(dist, plain[0], rtol=1e-5, atol=1e-5)
    single = BankIndex(bank[:41], torch.cat([torch.zeros(40, dtype=torch.long), torch.ones(1, dtype=torch.long)]),
                       backend="faiss", device=CPU)
    with pytest.raises(ParameterError, match="fewer than k = 2"):
        single.search_leave_own_out(queries, 2, np.zeros(20, dtype=np.int64))


def test_faiss_tells_rows_by_their_place_in_the_bank_whatever_order_it_holds_them_in():
    bank, ids = _interleaved_bank()
    index = BankIndex(bank, ids, backend="faiss", device=CPU)
    np.testing.assert_array_equal(index.rows(), bank.numpy())
    assert np.array_equal(index.search(bank[:50] + 0.001, 1)[1][:, 0], np.arange(50))


def test_faiss_imported_by_eagle_runs_on_torch_s_openmp_runtime():
    # In a fresh process, as the CLI starts: with one runtime, the threads torch sets are the ones faiss sees.
    program = ("from eagle_cli.expert.knn import BankIndex\nimport faiss, torch\nfaiss.omp_set_num_threads(1)\n"
               "torch.set_num_threads(3)\nprint(faiss.omp_get_max_threads())")
    seen = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True).stdout
    assert seen.split() == ["3"]
