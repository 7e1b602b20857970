"""eagle update-bank: add good images to a bank without refitting it.

Only the new images are extracted (with the bank's extraction settings). Their features and the
bank's training features are joined by reference into one ``features`` artifact (the calibration
of the grown bank scores old and new images alike; no old row is copied or rehashed on disk), and
the greedy coreset continues from the bank's selection over old and new patches
(:func:`continue_coreset`): the grown bank is the greedy run seeded with the old selection, and
lists the old bank among its inputs.
"""

from __future__ import annotations

import torch

from eagle_cli import artifacts
from eagle_cli.artifacts import ArtifactRef
from eagle_cli.context import Context
from eagle_cli.data.source import DataSource
from eagle_cli.errors import ArtifactError, ParameterError
from eagle_cli.expert.coreset import continue_coreset, coreset_size
from eagle_cli.formats.bank import read_bank_cover, write_bank
from eagle_cli.formats.features import feature_parts, read_features, write_joined
from eagle_cli.params import BankParams, ExtractParams
from eagle_cli.seeds import category_seed
from eagle_cli.stages.extract import run_extract


def run_grow_bank(bank_ref: ArtifactRef, source: DataSource, *, category: str | None = None, batch_size: int = 8,
                  device: str = "auto", context: Context) -> ArtifactRef:
    """Extract the train images of ``source`` (its ``category``, default the bank's) and grow the bank with them."""
    params = BankParams.of_bank(bank_ref.params)
    if params.coreset_shard_images:
        raise ParameterError(f"Bank {bank_ref.id} was selected in shards (--coreset-shard-images "
                             f"{params.coreset_shard_images}); growing continues one greedy over all patches, which "
                             "a sharded selection is not. Refit it with eagle fit-bank on all images instead.")
    try:
        old = bank_ref.input("features")
    except ArtifactError as error:
        raise ArtifactError(f"Bank {bank_ref.id} cannot grow: its training features are gone or damaged ({error}). "
                            "Growing joins the old images' features with the new ones; refit with eagle fit-bank "
                            "on all images instead.") from None
    bank_category = old.params["category"]
    extract = ExtractParams.of_features(old.params, batch_size=batch_size, device=device)
    new = run_extract(source, category or bank_category, "train", extract, context=context)
    if new.id == old.id:
        raise ParameterError(f"The images to add are the bank's own training images ({old.path}); nothing to add.")
    artifacts.check_lineage(old, new, what="The bank's training images and the images to add")
    joined = join_features(old, new, context=context)

    def build(draft):
        # Both parts were checked as extracted (and the old one again by fit-bank); their hashes hold.
        features, _, _ = read_features(joined, check_finite=False)
        n_images, patches, dim = features.shape
        flat = features.reshape(-1, dim)
        previous = read_bank_cover(bank_ref)
        seed = category_seed(params.seed, bank_category)
        more = coreset_size(n_images * patches, params.coreset_ratio) - len(previous.selected)
        with context.reporter.task(f"grow bank {bank_category}", max(more, 0)) as advance:
            coreset = continue_coreset(flat, previous, params.coreset_ratio,
                                       proj_dim=params.proj_dim, generator=torch.Generator().manual_seed(seed),
                                       progress=advance, updates=params.coreset_updates)
        write_bank(draft, flat[coreset.selected].float(), coreset, patches, n_images, params.knn_k)
        draft.lineage = joined.lineage
        draft.summary = {"images": n_images, "added_images": new.summary["images"], "patches": n_images * patches,
                         "bank_size": len(coreset.selected), "parent_bank_size": len(previous.selected),
                         "grown_from": bank_ref.id, "cover_radius": float(coreset.cover_sq_dist.max().sqrt()),
                         "category_seed": seed, "weights": joined.lineage["weights"]}

    return artifacts.produce("bank", context=context, category=bank_category, params=params.identity(),
                             inputs=[joined, bank_ref], build=build)


def join_features(old: ArtifactRef, new: ArtifactRef, *, context: Context) -> ArtifactRef:
    """One train ``features`` artifact holding ``old``'s images, then ``new``'s, by reference: no rows are
    copied, so growing costs what the new images cost, not a rewrite of the old ones."""
    parts = feature_parts(old) + [new]

    def build(draft):
        images, errors = write_joined(draft, parts)
        draft.lineage = old.lineage
        draft.summary = {"images": images, "errors": errors, "grid": old.summary["grid"],
                         "joined": [part.id for part in parts]}

    first = parts[0].params
    params = {**first, "images": [part.params["images"] for part in parts],
              "source": [part.params["source"] for part in parts], "parts": [part.id for part in parts]}
    return artifacts.produce("features", context=context, category=first["category"], params=params,
                             inputs=parts, build=build)
