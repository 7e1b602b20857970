"""Score with an export folder: onnxruntime (or OpenVINO) for the features, faiss-cpu for the search, numpy for
the rest.

Nothing here imports torch, so a line PC installs ``eagle-cli[runtime]`` without it (README). Images are
decoded, framed, judged and mapped by the same modules as the torch expert's (data/images.py,
expert/geometry.py, expert/decision.py); only the feature network and the search run elsewhere.

    from eagle_cli.export.runtime import ExportedExpert

    expert = ExportedExpert.load("exports/bottle")
    result = expert.score([Image.open("part.png")])  # the same Scored as Expert.score
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np
from PIL import Image
from safetensors.numpy import load_file

from eagle_cli.errors import ArtifactError
from eagle_cli.expert.decision import Scored, decide
from eagle_cli.expert.geometry import Geometry
from eagle_cli.expert.image_rule import CellNorm, ImageRule
from eagle_cli.expert.scoring import searched_scores
from eagle_cli.export.folder import BANK, EXPERT, MANIFEST, read_manifest
from eagle_cli.export.graphs import open_graph
from eagle_cli.lineage import Lineage


class ExportedExpert:
    """An exported expert: ``score`` and ``score_frames`` answer as :class:`~eagle_cli.expert.model.Expert`'s do."""

    def __init__(self, folder: Path, manifest: dict, settings: dict, tensors: dict[str, np.ndarray],
                 providers: Sequence[str]):
        self.folder, self.manifest = folder, manifest
        self.lineage = Lineage.from_dict(manifest["lineage"])
        self.threshold_id = manifest.get("threshold", {}).get("id")
        self.geometry = Geometry(**settings["geometry"])
        self.tau, self.s_max = float(settings["tau"]), float(settings["s_max"])
        self.knn_k, self.sigma_px = int(settings["knn_k"]), float(settings["map_sigma_px"])
        self.batch_size = int(settings["batch_size"])
        norm = CellNorm(tensors["norm_mean"], tensors["norm_std"]) if "norm_mean" in tensors else None
        rule = settings["rule"]
        self.rule = ImageRule(rule["kind"], int(rule["top"]), float(rule["sigma_px"]), self.geometry,
                              tuple(settings["grid"]), norm)
        bank = np.ascontiguousarray(tensors["bank"], dtype=np.float32)
        self.index = faiss.IndexFlatL2(bank.shape[1])
        self.index.add(bank)
        self.runtime = manifest["runtime"]
        self.features = open_graph(folder, self.runtime, providers)

    @classmethod
    def load(cls, folder: str | Path, *, providers: Sequence[str] = ("CPUExecutionProvider",)) -> ExportedExpert:
        """Open an export folder after checking every file against its manifest."""
        folder = Path(folder)
        manifest = read_manifest(folder)
        try:
            settings = json.loads((folder / EXPERT).read_text())
            return cls(folder, manifest, settings, load_file(str(folder / BANK)), providers)
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{folder} holds an export this runtime cannot use ({type(exc).__name__}: {exc}); "
                                "export it again with `eagle export`.") from None

    @classmethod
    def for_threshold(cls, folder: Path, threshold_id: str, category: str, runtime: str, *,
                      batch_size: int | None = None) -> ExportedExpert:
        """The export of the threshold ``threshold_id`` in ``folder`` (or in its subfolder ``category``), for
        ``runtime``; an export of another threshold or format is refused. ``batch_size``: tiles per graph run
        (default: the export's)."""
        folder = Path(folder)
        if not (folder / MANIFEST).is_file() and (folder / category / MANIFEST).is_file():
            folder = folder / category
        expert = cls.load(folder)
        expert.batch_size = batch_size or expert.batch_size
        if expert.threshold_id != threshold_id:
            raise ArtifactError(f"{folder} was exported from threshold {expert.threshold_id}, not {threshold_id}: "
                                f"export this threshold (eagle export --threshold {threshold_id}) or score with that "
                                "one.")
        if expert.runtime != runtime:
            raise ArtifactError(f"{folder} holds an {expert.runtime} export, and --runtime {runtime} was asked for; "
                                f"pass --runtime {expert.runtime} or export with --format {runtime}.")
        return expert

    def score(self, images: Sequence[Image.Image]) -> Scored:
        """Score images of any size and mode, framed as the expert's training images were; an image smaller than
        the frame, or of a kind eagle refuses, raises :class:`~eagle_cli.errors.ImageError`."""
        return self.score_frames(*self.geometry.frames(images))

    def score_frames(self, frames: np.ndarray, sizes: list[tuple[int, int]]) -> Scored:
        """Score normalised frames ``(B, 3, frame, frame)`` of images whose original (width, height) are ``sizes``.
        Tiles go through the graph ``batch_size`` at a time and their patches are searched as the torch expert's are
        (:func:`~eagle_cli.expert.scoring.searched_scores`)."""
        tiles = self.geometry.tiles(np.ascontiguousarray(frames, dtype=np.float32))
        size = self.batch_size
        batches = (self.features(tiles[start:start + size]) for start in range(0, len(tiles), size))
        blocks = (features.reshape(-1, features.shape[-1]) for features in batches)
        per_patch = searched_scores(blocks, lambda queries: self.index.search(queries, self.knn_k)[0])
        return decide(per_patch.reshape(len(frames), -1), sizes, self.rule, tau=self.tau, s_max=self.s_max,
                      sigma_px=self.sigma_px)
