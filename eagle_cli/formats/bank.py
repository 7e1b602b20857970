"""``bank`` artifacts: the coreset memory bank and its exact squared-L2 faiss index.

``bank.safetensors`` holds ``bank`` ``(M, D) float32``, ``image_ids`` (the training image of each
row), ``source_rows`` (its row in the flattened training features), ``selected_per_image``, and,
from schema 2, for every training patch the bank row that covers it in the coreset's projected space
(``cover``) and the squared distance to it (``cover_sq_dist``); metadata carries kind, schema,
artifact id and ``knn_k``. ``index.faiss`` is faiss's own format.
"""

from __future__ import annotations

import faiss
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from eagle_cli.artifacts import SCHEMAS, ArtifactRef, Draft
from eagle_cli.devices import resolve_device
from eagle_cli.errors import ArtifactError
from eagle_cli.expert.coreset import Coreset
from eagle_cli.expert.knn import BankIndex, pick_backend

BANK_FILE = "bank.safetensors"
INDEX_FILE = "index.faiss"


def write_bank(draft: Draft, bank: torch.Tensor, coreset: Coreset, patches_per_image: int, n_images: int,
               knn_k: int) -> None:
    """Write the bank rows, where each came from, what each covers, and a faiss index over them."""
    image_ids = coreset.selected // patches_per_image
    save_file({"bank": bank.contiguous(), "image_ids": image_ids, "source_rows": coreset.selected,
               "selected_per_image": torch.bincount(image_ids, minlength=n_images),
               "cover": coreset.cover.int(), "cover_sq_dist": coreset.cover_sq_dist.contiguous()},
              str(draft.file(BANK_FILE)),
              metadata={"kind": "bank", "schema": str(SCHEMAS["bank"]), "artifact_id": draft.id, "knn_k": str(knn_k)})
    BankIndex(bank, image_ids, backend="faiss", device=torch.device("cpu")).save(draft.file(INDEX_FILE))


def read_bank(ref: ArtifactRef, *, backend: str, device: str) -> BankIndex:
    """Open a bank artifact's index on the backend that fits ``device``.

    The faiss backend reads only faiss's index (the rows are not loaded twice); torch reads the rows.
    """
    device = resolve_device(device)
    backend = pick_backend(backend, device)
    tensors = read_bank_tensors(ref, keys=("image_ids", "bank") if backend == "torch" else ("image_ids",))
    index = faiss.read_index(str(ref.path / INDEX_FILE)) if backend == "faiss" else None
    return BankIndex(tensors.get("bank"), tensors["image_ids"], backend=backend, device=device, faiss_index=index)


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
