"""``eagle export``: write a fitted expert as an ONNX feature graph plus the numbers that judge with it.

The graph maps normalised tiles ``(N, 3, tile, tile)`` to patch features ``(N, H * W, D)``: the backbone up to
its last used layer and the aggregation (3×3 pooling, grid alignment, layer weights, projection), nothing more.
The nearest-neighbour search stays outside it, in bounded blocks on the runtime's side, so no graph ever holds
a patches × bank distance matrix (the failure of the exports the field reports: tens of GB at inference).

Before the folder is published the graph is run beside the torch network on real-sized random tiles; an export
whose features differ (an operator the exporter translates wrongly) is refused, never written.
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

from eagle_cli.artifacts import ArtifactRef
from eagle_cli.errors import ArtifactError, ParameterError
from eagle_cli.expert.features import PatchFeatureExtractor
from eagle_cli.expert.image_rule import ImageRule
from eagle_cli.expert.model import Expert
from eagle_cli.export.folder import BANK, EXPERT, GRAPHS, MANIFEST, write_manifest
from eagle_cli.export.graphs import open_graph, to_openvino
from eagle_cli.params import ExportParams, ScoreParams

#: Features of the graph and of torch may differ by float rounding only: relative to the features' scale.
PARITY_TOLERANCE = 1e-4
#: The ONNX operator set written; onnxruntime has read it since 1.14.
OPSET = 18


class _FeatureGraph(torch.nn.Module):
    """Tiles to patch features: :meth:`PatchFeatureExtractor.features` as a module, its network registered so that
    the exporter writes its weights."""

    def __init__(self, extractor: PatchFeatureExtractor):
        super().__init__()
        self.model = extractor.model
        extractor.multipliers()  # decided (one probe forward) before tracing, not inside it
        self._extractor = extractor

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        return self._extractor.features(tiles)


def export_expert(expert: Expert, out: Path, *, format: str = "onnx", threshold: dict | None = None) -> Path:
    """Write ``expert`` to the folder ``out`` in ``format`` (onnx or openvino), replacing an earlier export there,
    and return it.

    ``threshold`` describes where the expert came from (id, path, category), recorded in the manifest.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise ParameterError(f"--out {out} exists and is not an eagle export; choose a new or empty folder.")
    extractor = expert.extractor
    grid = extractor.grid()
    rule = ImageRule.of(expert.bank, expert.geometry, grid, expert.norm)
    draft = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.tmp"
    draft.mkdir(parents=True)
    try:
        _write_graph(_FeatureGraph(extractor).eval(), expert.geometry.tile_side, draft, format, extractor.spec.name)
        tensors = {"bank": np.ascontiguousarray(expert.index.rows(), dtype=np.float32)}
        if rule.norm is not None:
            tensors.update(norm_mean=rule.norm.mean, norm_std=rule.norm.std)
        save_file(tensors, str(draft / BANK))
        settings = {"geometry": asdict(expert.geometry), "grid": list(grid), "feature_dim": extractor.feature_dim,
                    "knn_k": expert.bank.knn_k, "rule": {"kind": rule.kind, "top": rule.top, "sigma_px": rule.sigma_px},
                    "map_sigma_px": expert.sigma_px, "tau": expert.tau, "s_max": expert.s_max,
                    "batch_size": extractor.batch_size}
        (draft / EXPERT).write_text(json.dumps(settings, indent=2) + "\n")
        write_manifest(draft, threshold=threshold or {}, lineage=extractor.lineage.as_dict(), runtime=format)
        if out.exists():
            shutil.rmtree(out)
        draft.rename(out)
    finally:
        shutil.rmtree(draft, ignore_errors=True)
    return out


def export_threshold(ref: ArtifactRef, settings: ExportParams, score: ScoreParams = ScoreParams()) -> Path:
    """Export the expert of the threshold artifact ``ref`` to ``settings.out / category``; ``score``'s σ and batch
    size travel with it."""
    from eagle_cli.formats.expert import load_expert

    expert = load_expert(ref, replace(score, device="cpu"))
    return export_expert(expert, settings.out / ref.category, format=settings.format,
                         threshold={"id": ref.id, "path": str(ref.path), "category": ref.category})


def _write_graph(graph: _FeatureGraph, side: int, folder: Path, format: str, backbone: str) -> None:
    """Export ``graph`` for tiles of ``side`` px with a free batch size, then check it as the runtime will run it."""
    path = folder / GRAPHS["onnx"][0]
    probe = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0))
    try:
        torch.onnx.export(graph, (probe,), str(path), dynamo=True, opset_version=OPSET, input_names=["tiles"],
                          output_names=["features"], dynamic_shapes=({0: torch.export.Dim("tiles")},),
                          external_data=False, verbose=False)
    except Exception as exc:  # the exporter fails in many ways; each means this network does not export
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ArtifactError(f"{backbone} with these layers and pooling does not export to ONNX "
                            f"({type(exc).__name__}: {first}); score it with eagle's torch runtime.") from None
    if format == "openvino":
        to_openvino(path)
    with torch.inference_mode():
        expected = graph(probe).numpy()
    got = open_graph(folder, format)(probe.numpy())
    error = float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-12))
    if got.shape != expected.shape or error > PARITY_TOLERANCE:
        raise ArtifactError(f"The {format} graph of {backbone} does not reproduce eagle's features (largest "
                            f"difference {error:.1e} of their scale, shape {got.shape} vs {expected.shape}); nothing "
                            "was exported: score it with eagle's torch runtime.")
