"""eagle fit-bank: a coreset memory bank of training patch features, as a ``bank`` artifact."""

from __future__ import annotations

import torch

from eagle_cli import artifacts
from eagle_cli.artifacts import ArtifactRef
from eagle_cli.context import Context
from eagle_cli.errors import ArtifactError, ParameterError
from eagle_cli.expert.coreset import coreset_size, select_coreset
from eagle_cli.formats.bank import write_bank
from eagle_cli.formats.features import read_features
from eagle_cli.params import BankParams
from eagle_cli.seeds import category_seed


def run_fit_bank(features_ref: ArtifactRef, params: BankParams, *, context: Context) -> ArtifactRef:
    """Select the coreset of a train-split features artifact and index it for exact squared-L2 search."""
    if features_ref.params.get("split") != "train":
        raise ArtifactError(f"{features_ref.path} holds {features_ref.params.get('split')} features; "
                            "a bank is fitted on the train split (good images only).")
    category = features_ref.params["category"]

    def build(draft):
        features, _, _ = read_features(features_ref)
        n_images, patches, dim = features.shape
        flat = features.reshape(-1, dim)
        size = coreset_size(flat.shape[0], params.coreset_ratio)
        if size < params.knn_k:
            raise ParameterError(f"The bank would hold {size} entries, fewer than --knn-k {params.knn_k}.")
        seed = category_seed(params.seed, category)
        with context.reporter.task(f"coreset {category}", size) as advance:
            coreset = select_coreset(flat, params.coreset_ratio, proj_dim=params.proj_dim, n_starts=params.n_starts,
                                     init=params.init, generator=torch.Generator().manual_seed(seed),
                                     progress=advance, shard_rows=params.coreset_shard_images * patches,
                                     updates=params.coreset_updates)
        write_bank(draft, flat[coreset.selected].float(), coreset, patches, n_images, params.knn_k)
        draft.lineage = features_ref.lineage
        draft.summary = {"images": n_images, "patches": int(flat.shape[0]), "bank_size": len(coreset.selected),
                         "cover_radius": float(coreset.cover_sq_dist.max().sqrt()),
                         "category_seed": seed, "weights": features_ref.lineage["weights"]}

    return artifacts.produce("bank", context=context, category=category, params=params.identity(),
                             inputs=[features_ref], build=build)
