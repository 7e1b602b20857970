"""eagle fit-bank: a coreset memory bank of training patch features, as a ``bank`` artifact."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import faiss
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from eagle_cli import artifacts
from eagle_cli.artifacts import ArtifactRef
from eagle_cli.errors import ArtifactError, ParameterError
from eagle_cli.expert.coreset import INIT_STRATEGIES, coreset_size, select_coreset
from eagle_cli.expert.knn import BankIndex, pick_backend
from eagle_cli.context import Context
from eagle_cli.stages.common import category_seed, load_features, resolve_device

BANK_FILE = "bank.safetensors"
INDEX_FILE = "index.faiss"


@dataclass(frozen=True)
class BankParams:
    """Coreset and kNN settings; defaults reproduce the reference (10 %, 128-d, 10 starts, k = 1)."""

    coreset_ratio: float = 0.1
    proj_dim: int = 128
    n_starts: int = 10
    init: str = "center_farthest"
    seed: int = 0
    knn_k: int = 1

    def __post_init__(self):
        if self.init not in INIT_STRATEGIES:
            raise ParameterError(f"Unknown --init {self.init!r}; choose one of {', '.join(INIT_STRATEGIES)}.")
        if self.knn_k < 1:
            raise ParameterError(f"--knn must be at least 1, got {self.knn_k}.")
        if self.n_starts < 1:
            raise ParameterError(f"--n-starts must be at least 1, got {self.n_starts}.")


def run_fit_bank(features_ref: ArtifactRef, params: BankParams, *, context: Context) -> ArtifactRef:
    """Select the coreset of a train-split features artifact and index it for exact squared-L2 search."""
    if features_ref.params.get("split") != "train":
        raise ArtifactError(f"{features_ref.path} holds {features_ref.params.get('split')} features; "
                            "a bank is fitted on the train split (good images only).")
    category = features_ref.params["category"]
    draft = artifacts.start("bank", root=context.artifacts, run=context.run, category=category,
                            params=asdict(params), inputs=[features_ref], force=context.force)
    if isinstance(draft, ArtifactRef):
        return draft
    with draft:
        features, records, _ = load_features(features_ref)
        n_images, patches, dim = features.shape
        flat = features.reshape(-1, dim)
        size = coreset_size(flat.shape[0], params.coreset_ratio)
        if size < params.knn_k:
            raise ParameterError(f"The bank would hold {size} entries, fewer than --knn {params.knn_k}.")
        seed = category_seed(params.seed, category)
        with context.reporter.task(f"coreset {category}", size) as advance:
            selected = select_coreset(flat, params.coreset_ratio, proj_dim=params.proj_dim, n_starts=params.n_starts,
                                      init=params.init, generator=torch.Generator().manual_seed(seed),
                                      progress=lambda done: advance(1))
        image_ids = selected // patches
        bank = flat[selected].float()
        per_image = torch.bincount(image_ids, minlength=n_images)
        save_file({"bank": bank.contiguous(), "image_ids": image_ids, "source_rows": selected,
                   "selected_per_image": per_image},
                  str(draft.file(BANK_FILE)),
                  metadata={"kind": "bank", "schema": "1", "artifact_id": draft.id, "knn_k": str(params.knn_k)})
        BankIndex(bank, image_ids, backend="faiss", device=torch.device("cpu")).save(draft.file(INDEX_FILE))
        draft.lineage = features_ref.lineage
        draft.summary = {"images": n_images, "patches": int(flat.shape[0]), "bank_size": size,
                         "category_seed": seed, "weights": features_ref.lineage["weights"]}
        return draft.publish()


def load_bank(ref: ArtifactRef, *, backend: str, device: str) -> BankIndex:
    """Open a bank artifact's index on the backend that fits ``device``.

    The faiss backend reads only faiss's index (the rows are not loaded twice); torch reads the rows.
    """
    device = resolve_device(device)
    backend = pick_backend(backend, device)
    tensors = load_bank_tensors(ref, keys=("image_ids", "bank") if backend == "torch" else ("image_ids",))
    index = faiss.read_index(str(ref.path / INDEX_FILE)) if backend == "faiss" else None
    return BankIndex(tensors.get("bank"), tensors["image_ids"], backend=backend, device=device, faiss_index=index)


def load_bank_tensors(ref: ArtifactRef, keys: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    """The bank file's tensors (``keys``, default all): bank, image_ids, source_rows, selected_per_image."""
    with safe_open(str(ref.path / BANK_FILE), framework="pt") as fh:
        return {key: fh.get_tensor(key) for key in (keys or fh.keys())}
