"""``bank`` artifacts: the coreset memory bank.

``bank.safetensors`` holds ``bank`` ``(M, D) float32``, ``image_ids`` (the training image of each
row), ``source_rows`` (its row in the flattened training features), ``selected_per_image``, and,
from schema 2, for every training patch the bank row that covers it in the coreset's projected space
(``cover``) and the squared distance to it (``cover_sq_dist``); metadata carries kind, schema,
artifact id and ``knn_k``. Schema 2 also stored the rows a second time as a faiss index
(``index.faiss``); from schema 3 the exact index is built from the rows when the bank is opened.
"""

from __future__ import annotations

import faiss
import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from eagle_cli.artifacts import SCHEMAS, ArtifactRef, Draft
from eagle_cli.devices import resolve_device
from eagle_cli.errors import ArtifactError
from eagle_cli.expert.coreset import Coreset
from eagle_cli.expert.knn import BankIndex, pick_backend

BANK_FILE = "bank.safetensors"
#: Rows copied into a faiss index at a time: the bank is never held twice in memory.
_ADD_ROWS = 65536


def write_bank(draft: Draft, bank: torch.Tensor, coreset: Coreset, patches_per_image: int, n_images: int,
               knn_k: int) -> None:
    """Write the bank rows, where each came from and what each covers."""
    image_ids = coreset.selected // patches_per_image
    save_file({"bank": bank.contiguous(), "image_ids": image_ids, "source_rows": coreset.selected,
               "selected_per_image": torch.bincount(image_ids, minlength=n_images),
               "cover": coreset.cover.int(), "cover_sq_dist": coreset.cover_sq_dist.contiguous()},
              str(draft.file(BANK_FILE)),
              metadata={"kind": "bank", "schema": str(SCHEMAS["bank"]), "artifact_id": draft.id, "knn_k": str(knn_k)})


def read_bank(ref: ArtifactRef, *, backend: str, device: str) -> BankIndex:
    """Open a bank artifact's index on the backend that fits ``device``.

    The faiss backend copies the rows into an exact index a block at a time (the rows are never held
    twice); torch reads them whole.
    """
    device = resolve_device(device)
    backend = pick_backend(backend, device)
    tensors = read_bank_tensors(ref, keys=("image_ids", "bank") if backend == "torch" else ("image_ids",))
    index = _exact_index(ref) if backend == "faiss" else None
    return BankIndex(tensors.get("bank"), tensors["image_ids"], backend=backend, device=device, faiss_index=index)


def _exact_index(ref: ArtifactRef) -> faiss.Index:
    with safe_open(str(ref.path / BANK_FILE), framework="numpy") as fh:
        rows = fh.get_slice("bank")
        count, dim = rows.get_shape()
        index = faiss.IndexFlatL2(dim)
        for start in range(0, count, _ADD_ROWS):
            index.add(np.ascontiguousarray(rows[start:min(start + _ADD_ROWS, count)], dtype=np.float32))
    return index


def read_bank_tensors(ref: ArtifactRef, keys: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    """The bank file's tensors (``keys``, default all): bank, image_ids, source_rows, selected_per_image, cover,
    cover_sq_dist (schema 2)."""
    with safe_open(str(ref.path / BANK_FILE), framework="pt") as fh:
        return {key: fh.get_tensor(key) for key in (keys or fh.keys())}


def read_bank_cover(ref: ArtifactRef) -> Coreset:
    """The bank's coreset: its rows and what each training patch is covered by; refuses a bank of schema 1,
    which did not record the cover."""
    with safe_open(str(ref.path / BANK_FILE), framework="pt") as fh:
        recorded = "cover" in fh.keys()
    if not recorded:
        raise ArtifactError(f"Bank {ref.id} ({ref.path}) was fitted by an earlier eagle and does not record which "
                            "entry covers each training patch, which --calibration refill needs. Fit the bank again "
                            "with this eagle (eagle fit-bank; the new bank gets a new id), or choose another "
                            "--calibration.")
    # Not the bank rows themselves: at thousands of images they are gigabytes the calibration never reads.
    tensors = read_bank_tensors(ref, keys=("source_rows", "cover", "cover_sq_dist"))
    return Coreset(tensors["source_rows"], tensors["cover"].long(), tensors["cover_sq_dist"])
