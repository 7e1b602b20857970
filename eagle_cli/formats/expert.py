"""The expert the stages fitted, loaded from a ``threshold`` artifact (it finds its bank and extraction)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from eagle_cli import artifacts
from eagle_cli.artifacts import ArtifactRef
from eagle_cli.expert.model import Expert
from eagle_cli.formats.bank import open_bank
from eagle_cli.formats.calibration import read_cell_norm
from eagle_cli.formats.features import features_info
from eagle_cli.formats.threshold import read_threshold
from eagle_cli.lineage import Lineage
from eagle_cli.params import ScoreParams


def load_expert(threshold: ArtifactRef | str | Path, settings: ScoreParams = ScoreParams()) -> Expert:
    """The expert of a ``threshold`` artifact (a reference or its folder), searching and smoothing as ``settings``
    say (device, kNN backend, batch size, σ)."""
    ref = threshold if isinstance(threshold, ArtifactRef) else artifacts.open_artifact(threshold, "threshold")
    bank = open_bank(ref.input("bank"))
    train = features_info(bank.ref.input("features"))
    extract = replace(train.extract, batch_size=settings.batch_size, device=settings.device)
    return Expert(bank.index(backend=settings.knn_backend, device=settings.device), bank.params, extract,
                  read_threshold(ref), norm=read_cell_norm(ref.input("calibration")),
                  lineage=Lineage.from_dict(ref.lineage), sigma_px=settings.sigma_px)
