"""Exact nearest-neighbour search over the memory bank, in squared L2 (as faiss ``IndexFlatL2``).

Two backends return the same neighbours: faiss on the CPU, torch matmul on a GPU (or anywhere,
on request). Leave-own-out search for training images asks for a few extra neighbours and drops
those from the image itself; only rows left with fewer than k neighbours are searched again,
exactly, with the image's entries excluded.
"""

from __future__ import annotations

import faiss
import numpy as np
import torch

from eagle_cli.errors import ParameterError

BACKENDS = ("auto", "faiss", "torch")
_TORCH_CHUNK = 4096


def pick_backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ParameterError(f"Unknown kNN backend {backend!r}; choose one of {', '.join(BACKENDS)}.")
    if backend == "auto":
        return "torch" if device.type == "cuda" else "faiss"
    return backend


class BankIndex:
    """The memory bank ``(M, D) float32`` with the source image id of every row.

    On the faiss backend the rows live in faiss's index only; ``bank`` may then be None when
    ``faiss_index`` is given.
    """

    def __init__(self, bank: torch.Tensor | None, image_ids: torch.Tensor, *, backend: str, device: torch.device,
                 faiss_index: faiss.Index | None = None):
        self.image_ids = image_ids.numpy().astype(np.int64)
        self.backend = pick_backend(backend, device)
        self.device = device
        if self.backend == "faiss":
            if faiss_index is None:
                faiss_index = faiss.IndexFlatL2(bank.shape[1])
                faiss_index.add(np.ascontiguousarray(bank.numpy(), dtype=np.float32))
            self.index = faiss_index
            self.size = faiss_index.ntotal
        else:
            self.bank = bank.to(device, torch.float32)
            self.bank_sq = (self.bank * self.bank).sum(1)
            self.size = bank.shape[0]

    def rows(self) -> np.ndarray:
        """The bank's rows ``(M, D) float32``, wherever they live."""
        if self.backend == "faiss":
            return self.index.reconstruct_n(0, self.size)
        return self.bank.cpu().numpy()

    def search(self, queries: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Return squared distances and bank rows ``(Q, k)`` of the k nearest bank entries."""
        if k > self.size:
            raise ParameterError(f"k = {k} neighbours requested but the bank has only {self.size} entries.")
        if self.backend == "faiss":
            return self.index.search(_as_float32(queries), k)
        return self._torch_search(queries, k, None)

    def search_leave_own_out(self, queries: torch.Tensor, k: int, owners: np.ndarray, *,
                             extra: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Squared distances ``(Q, k)`` to the k nearest entries not from each row's own image ``owners[q]``.

        Also returns the bank rows the search listed for each row, nearest first ``(Q, ≥ k)`` (faiss lists the
        k + ``extra`` nearest of any image, torch the k nearest of the other images), and how many rows needed
        the exact fallback search.
        """
        if self.backend == "torch":
            dist, rows = self._torch_search(queries, k, owners)
            return dist, rows, 0
        depth = min(self.size, k + extra)
        dist, rows = self.index.search(_as_float32(queries), depth)
        keep = self.image_ids[rows] != owners[:, None]
        short = keep.sum(1) < k
        out = np.empty((len(rows), k), dtype=np.float32)
        first_k = keep & (np.cumsum(keep, axis=1) <= k)
        out[~short] = dist[~short][first_k[~short]].reshape(-1, k)
        for owner in np.unique(owners[short]):
            own = np.flatnonzero(self.image_ids == owner)
            if self.size - len(own) < k:
                raise ParameterError(f"Only {self.size - len(own)} bank entries come from other images than "
                                     f"image {owner}; fewer than k = {k}.")
            rows_of = short & (owners == owner)
            selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(own.astype(np.int64)))
            out[rows_of] = self.index.search(_as_float32(queries[torch.as_tensor(rows_of)]), k,
                                             params=faiss.SearchParameters(sel=selector))[0]
        return out, rows, int(short.sum())

    def _torch_search(self, queries: torch.Tensor, k: int, owners: np.ndarray | None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Distances and rows ``(Q, k)``, skipping ``owners``' entries when given."""
        ids = torch.as_tensor(self.image_ids, device=self.device)
        dists, rows = [], []
        for start in range(0, queries.shape[0], _TORCH_CHUNK):
            q = queries[start:start + _TORCH_CHUNK].to(self.device, torch.float32)
            d = torch.addmm(self.bank_sq, q, self.bank.T, alpha=-2).add_((q * q).sum(1, keepdim=True)).clamp_(min=0)
            if owners is not None:
                own = torch.as_tensor(owners[start:start + _TORCH_CHUNK], device=self.device)
                d.masked_fill_(ids[None, :] == own[:, None], float("inf"))
            top = torch.topk(d, k, dim=1, largest=False)
            dists.append(top.values.cpu())
            rows.append(top.indices.cpu())
        return torch.cat(dists).numpy(), torch.cat(rows).numpy()


def _as_float32(queries: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(queries.detach().cpu().numpy(), dtype=np.float32)
