"""``bank`` artifacts: the coreset memory bank.

``bank.safetensors`` holds ``bank`` ``(M, D) float32``, ``image_ids`` (the training image of each
row), ``source_rows`` (its row in the flattened training features), ``selected_per_image``, and for
every training patch the bank row that covers it in the coreset's projected space (``cover``) and
the squared distance to it (``cover_sq_dist``); the metadata entry ``eagle`` holds kind, schema and artifact id. The
manifest's parameters are the bank settings (:class:`BankParams`); the exact search index is built
from the rows when the bank is opened.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from eagle_cli.artifacts import SCHEMAS, ArtifactRef, Draft
from eagle_cli.devices import resolve_device
from eagle_cli.expert.bank import MemoryBank
from eagle_cli.expert.coreset import Coreset
from eagle_cli.expert.knn import BankIndex, pick_backend
from eagle_cli.formats.features import map_tensor
from eagle_cli.params import BankParams
from eagle_cli.seeds import category_seed
from eagle_cli.settings import build

BANK_FILE = "bank.safetensors"


def write_bank(draft: Draft, bank: MemoryBank) -> None:
    """Write the bank rows, where each came from and what each covers."""
    image_ids = bank.image_ids
    save_file({"bank": bank.rows.contiguous(), "image_ids": image_ids, "source_rows": bank.coreset.selected,
               "selected_per_image": torch.bincount(image_ids, minlength=bank.n_images),
               "cover": bank.coreset.cover.int(), "cover_sq_dist": bank.coreset.cover_sq_dist.contiguous()},
              str(draft.file(BANK_FILE)),
              # One entry: safetensors writes its metadata map in hash order, so several would give equal banks
              # different bytes.
              metadata={"eagle": json.dumps({"kind": "bank", "schema": SCHEMAS["bank"], "artifact_id": draft.id})})


@dataclass(frozen=True)
class StoredBank:
    """A published bank: its settings, the category seed it was selected with, and its files."""

    ref: ArtifactRef
    params: BankParams
    seed: int
    size: int

    def index(self, *, backend: str, device: str) -> BankIndex:
        """The exact index on the backend that fits ``device``: faiss reads the rows from the memory-mapped file a
        block at a time (never held twice); torch reads them whole."""
        device = resolve_device(device)
        backend = pick_backend(backend, device)
        tensors = self.tensors(("image_ids",) if backend == "faiss" else ("image_ids", "bank"))
        rows = map_tensor(self.ref.path / BANK_FILE, "bank")[0] if backend == "faiss" else tensors["bank"]
        return BankIndex(rows, tensors["image_ids"], backend=backend, device=device)

    def tensors(self, keys: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
        """The bank file's tensors (``keys``, default all)."""
        with safe_open(str(self.ref.path / BANK_FILE), framework="pt") as fh:
            return {key: fh.get_tensor(key) for key in (keys or fh.keys())}

    def coreset(self) -> Coreset:
        """The bank's coreset: which training patches it holds and what covers each (not the rows: at thousands
        of images they are gigabytes the calibration never reads)."""
        tensors = self.tensors(("source_rows", "cover", "cover_sq_dist"))
        return Coreset(tensors["source_rows"], tensors["cover"].long(), tensors["cover_sq_dist"])


def open_bank(ref: ArtifactRef) -> StoredBank:
    params = build(BankParams, ref.params)  # the manifest's parameters are the settings' identity
    with safe_open(str(ref.path / BANK_FILE), framework="numpy") as fh:
        size = fh.get_slice("bank").get_shape()[0]
    return StoredBank(ref, params, category_seed(params.seed, ref.category), size)


def bank_summary(bank: MemoryBank, **more) -> dict:
    return {"images": bank.n_images, "patches": bank.n_images * bank.patches_per_image,
            "bank_size": len(bank.coreset.selected), "cover_radius": bank.cover_radius, "category_seed": bank.seed,
            **more}
