"""Exact nearest-neighbour search over the memory bank, in squared L2 (as faiss ``IndexFlatL2``).

Two backends return the same neighbours: faiss on the CPU, torch matmul on a GPU (or anywhere,
on request). A training image is searched against the other images' entries only (leave-own-out).
faiss holds the rows image by image, so the other images' entries are the two runs beside the image's
own and are searched where they lie: a copy of the bank without them would hold it twice, and faiss's
ID selectors leave its matrix-product path (3.9× slower, BENCHMARKS.md). torch masks them.
"""

from __future__ import annotations

import numpy as np
import torch

from eagle_cli.errors import ParameterError
from eagle_cli.expert.faiss_after_torch import faiss

BACKENDS = ("auto", "faiss", "torch")
_TORCH_CHUNK = 4096
#: Rows copied into the faiss index at a time: a memory-mapped bank is never held twice.
_ADD_ROWS = 65536


def pick_backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ParameterError(f"Unknown kNN backend {backend!r}; choose one of {', '.join(BACKENDS)}.")
    if backend == "auto":
        return "torch" if device.type == "cuda" else "faiss"
    return backend


class BankIndex:
    """The memory bank ``(M, D) float32`` with the source image id of every row; rows are always told by their
    place in ``bank``.

    On the faiss backend the rows live in faiss's index only, image by image; ``bank`` may be memory-mapped (it is
    read a block at a time).
    """

    def __init__(self, bank: torch.Tensor, image_ids: torch.Tensor, *, backend: str, device: torch.device):
        self.image_ids = image_ids.numpy().astype(np.int64)
        self.backend = pick_backend(backend, device)
        self.device = device
        self.size = bank.shape[0]
        if self.backend == "faiss":
            # The index's row i is the bank's row order[i]; an image's entries are one run of it.
            self._order = np.argsort(self.image_ids, kind="stable")
            self._sorted_ids = self.image_ids[self._order]
            self.index = faiss.IndexFlatL2(bank.shape[1])
            for start in range(0, self.size, _ADD_ROWS):
                self.index.add(_as_float32(bank[torch.as_tensor(self._order[start:start + _ADD_ROWS])]))
        else:
            self.bank = bank.to(device, torch.float32)
            self.bank_sq = (self.bank * self.bank).sum(1)

    def rows(self) -> np.ndarray:
        """The bank's rows ``(M, D) float32``, wherever they live."""
        if self.backend == "faiss":
            out = np.empty((self.size, self.index.d), dtype=np.float32)
            out[self._order] = self._stored()
            return out
        return self.bank.cpu().numpy()

    def search(self, queries: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Return squared distances and bank rows ``(Q, k)`` of the k nearest bank entries."""
        if k > self.size:
            raise ParameterError(f"k = {k} neighbours requested but the bank has only {self.size} entries.")
        if self.backend == "faiss":
            dist, found = self.index.search(_as_float32(queries), k)
            return dist, self._order[found]
        return self._torch_search(queries, k, None)

    def search_leave_own_out(self, queries: torch.Tensor, k: int, owners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Squared distances and bank rows ``(Q, k)`` of the k nearest entries not from each row's own image
        ``owners[q]``."""
        if self.backend == "torch":
            return self._torch_search(queries, k, owners)
        dist = np.empty((len(queries), k), dtype=np.float32)
        rows = np.empty((len(queries), k), dtype=np.int64)
        stored = self._stored()
        for owner in np.unique(owners):
            lo, hi = (int(np.searchsorted(self._sorted_ids, owner, side=side)) for side in ("left", "right"))
            if self.size - (hi - lo) < k:
                raise ParameterError(f"Only {self.size - (hi - lo)} bank entries come from other images than "
                                     f"image {owner}; fewer than k = {k}.")
            mine = np.flatnonzero(owners == owner)
            points = _as_float32(queries if len(mine) == len(queries) else queries[torch.as_tensor(mine)])
            found = [(*faiss.knn(points, stored[first:last], min(k, last - first)), first)
                     for first, last in ((0, lo), (hi, self.size)) if last > first]
            near = np.concatenate([d for d, _, _ in found], axis=1)
            at = np.concatenate([i + first for _, i, first in found], axis=1)
            if len(found) > 1:
                pick = np.argsort(near, axis=1, kind="stable")[:, :k]
                near, at = np.take_along_axis(near, pick, 1), np.take_along_axis(at, pick, 1)
            dist[mine], rows[mine] = near, self._order[at]
        return dist, rows

    def _stored(self) -> np.ndarray:
        """The faiss index's rows ``(M, D) float32`` as it holds them (image by image), viewed, not copied."""
        return faiss.rev_swig_ptr(self.index.get_xb(), self.size * self.index.d).reshape(self.size, self.index.d)

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


def nearest_rows(points: torch.Tensor, rows: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Squared distances and places ``(P, min(k, R))`` of each of ``points (P, D)``'s nearest of a few ``rows (R, D)``
    (a calibration image's refilled entries). faiss blocks the P × R distances itself (≈ 0.4 GB at once for a
    2048 px image and a thousand rows), and picks the nearest while they are in cache."""
    return faiss.knn(_as_float32(points), _as_float32(rows), min(k, len(rows)))
