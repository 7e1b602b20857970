"""eagle fit-threshold: DBT on leave-own-out scores of the training images, as a ``threshold`` artifact.

Reference parity (eagle-method.md A.7): a training image's score is the max, over its patches that
the coreset did not select, of the squared distance to the nearest bank entry from another image;
images with fewer than 32 unselected patches are left out. S_max is the max of those scores.
Where we differ: one index and one search per group of images instead of an index rebuilt per
image, and images left out are counted instead of turning τ and S_max into NaN.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from eagle_cli import artifacts
from eagle_cli.artifacts import ArtifactRef
from eagle_cli.errors import ParameterError
from eagle_cli.context import Context
from eagle_cli.stages.common import load_features, write_jsonl
from eagle_cli.stages.fit_bank import load_bank, load_bank_tensors
from eagle_cli.threshold import ThresholdParams, fit_threshold

THRESHOLD_FILE = "threshold.json"
TRAIN_SCORES_FILE = "train_scores.jsonl"
_IMAGES_PER_SEARCH = 16


@dataclass(frozen=True)
class FitThresholdParams:
    dbt: ThresholdParams = ThresholdParams()
    min_unselected: int = 32
    extra_neighbours: int = 32
    knn_backend: str = "auto"
    device: str = "auto"

    def identity(self) -> dict:
        # Search settings change speed, never the scores.
        return {**self.dbt.effective(), "min_unselected": self.min_unselected}


def run_fit_threshold(bank_ref: ArtifactRef, params: FitThresholdParams, *, context: Context) -> ArtifactRef:
    """Score every training image leave-own-out from its unselected patches and fit τ and S_max."""
    features_ref = bank_ref.input("features")
    category = features_ref.params["category"]
    draft = artifacts.start("threshold", root=context.artifacts, run=context.run, category=category,
                            params=params.identity(), inputs=[bank_ref], force=context.force)
    if isinstance(draft, ArtifactRef):
        return draft
    with draft:
        features, records, _ = load_features(features_ref)
        n_images, patches, _ = features.shape
        knn_k = int(bank_ref.params["knn_k"])
        tensors = load_bank_tensors(bank_ref)
        selected = torch.zeros(n_images * patches, dtype=torch.bool)
        selected[tensors["source_rows"]] = True
        unselected = ~selected.reshape(n_images, patches)
        counts = unselected.sum(1)
        usable = [i for i in range(n_images) if counts[i] >= params.min_unselected]
        if len(usable) < 2:
            raise ParameterError(
                f"Only {len(usable)} of {n_images} training images have ≥ {params.min_unselected} unselected "
                "patches; lower --min-unselected or --coreset-ratio, or add training images."
            )
        index = load_bank(bank_ref, backend=params.knn_backend, device=params.device, tensors=tensors)
        scores = np.full(n_images, np.nan)
        fallback_rows = 0
        with context.reporter.task(f"leave-own-out {category}", len(usable)) as advance:
            for start in range(0, len(usable), _IMAGES_PER_SEARCH):
                group = usable[start:start + _IMAGES_PER_SEARCH]
                queries = torch.cat([features[i][unselected[i]] for i in group])
                owners = np.repeat(group, [int(counts[i]) for i in group])
                dist, fallback = index.search_leave_own_out(queries, knn_k, owners, extra=params.extra_neighbours)
                fallback_rows += fallback
                patch_scores = dist.mean(1)
                bounds = np.cumsum([0] + [int(counts[i]) for i in group])
                for i, lo, hi in zip(group, bounds[:-1], bounds[1:]):
                    scores[i] = patch_scores[lo:hi].max()
                advance(len(group))
        excluded = n_images - len(usable)
        used = scores[usable]
        tau = fit_threshold(used, params.dbt)
        result = {"tau": tau, "s_max": float(used.max()), **params.dbt.effective(), "knn_k": knn_k,
                  "images": n_images, "used": len(usable), "excluded_few_unselected": excluded,
                  "min_unselected": params.min_unselected, "fallback_rows": fallback_rows,
                  "train_mean": float(used.mean()), "train_std": float(used.std())}
        draft.file(THRESHOLD_FILE).write_text(json.dumps(result, indent=2))
        write_jsonl(draft.file(TRAIN_SCORES_FILE), [
            {"path": rec["path"], "score": None if np.isnan(scores[i]) else float(scores[i]),
             "unselected_patches": int(counts[i]), "excluded": bool(np.isnan(scores[i]))}
            for i, rec in enumerate(records)
        ])
        draft.lineage = bank_ref.lineage
        draft.summary = {key: result[key] for key in ("tau", "s_max", "method", "used", "excluded_few_unselected")}
        return draft.publish()


def load_threshold(ref: ArtifactRef) -> dict:
    return json.loads((ref.path / THRESHOLD_FILE).read_text())
