"""The expert the stages fitted, loaded from a ``threshold`` artifact (it finds its bank and extraction), or its
export (``eagle export``) for a runtime without torch. Torch is imported only for the expert as fitted."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from eagle_cli import artifacts
from eagle_cli.artifacts import ArtifactRef
from eagle_cli.errors import ParameterError
from eagle_cli.lineage import Lineage
from eagle_cli.params import ScoreParams

if TYPE_CHECKING:
    from eagle_cli.expert.model import Expert
    from eagle_cli.export.runtime import ExportedExpert


def load_expert(threshold: ArtifactRef | str | Path, settings: ScoreParams = ScoreParams()) -> Expert:
    """The expert of a ``threshold`` artifact (a reference or its folder), searching and smoothing as ``settings``
    say (device, kNN backend, batch size, σ)."""
    from eagle_cli.expert.model import Expert
    from eagle_cli.formats.bank import open_bank
    from eagle_cli.formats.calibration import read_cell_norm
    from eagle_cli.formats.features import features_info
    from eagle_cli.formats.threshold import read_threshold

    ref = threshold if isinstance(threshold, ArtifactRef) else artifacts.open_artifact(threshold, "threshold")
    bank = open_bank(ref.input("bank"))
    train = features_info(bank.ref.input("features"))
    extract = replace(train.extract, batch_size=settings.batch_size, device=settings.device)
    return Expert(bank.index(backend=settings.knn_backend, device=settings.device), bank.params, extract,
                  read_threshold(ref), norm=read_cell_norm(ref.input("calibration")),
                  lineage=Lineage.from_dict(ref.lineage), sigma_px=settings.sigma_px)


def scoring_expert(threshold: ArtifactRef, settings: ScoreParams) -> Expert | ExportedExpert:
    """The expert ``settings.runtime`` scores with: the threshold's as fitted (torch), or its export in
    ``settings.export`` (onnx, openvino), which must have been made from this threshold."""
    if settings.runtime == "torch":
        return load_expert(threshold, settings)
    if settings.export is None:
        raise ParameterError(f"--runtime {settings.runtime} scores with an export: pass --export DIR, the folder "
                             "`eagle export` wrote.")
    from eagle_cli.export.runtime import ExportedExpert

    return ExportedExpert.for_threshold(settings.export, threshold.id, threshold.category, settings.runtime,
                                        batch_size=settings.batch_size)


def share_backbone(expert: Expert | ExportedExpert, other: Expert | ExportedExpert) -> bool:
    """Let ``expert`` use ``other``'s feature network when both compute features alike (same backbone, weights,
    layers, geometry and batch): one network in memory for several stations. Return whether it does."""
    from eagle_cli.expert.model import Expert

    if not (isinstance(expert, Expert) and isinstance(other, Expert)) or expert.lineage != other.lineage:
        return False
    if (expert.extract.batch_size, expert.extract.device) != (other.extract.batch_size, other.extract.device):
        return False
    expert.adopt_extractor(other.extractor)
    return True
