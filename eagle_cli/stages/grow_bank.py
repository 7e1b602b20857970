"""eagle update-bank: add good images to a bank without refitting it.

Only the new images are extracted (``eagle extract`` with the bank's settings, :func:`extraction_of`). Their
features and the
bank's training features are joined by reference into one ``features`` artifact (the calibration
of the grown bank scores old and new images alike; no old row is copied or rehashed on disk), and
the greedy coreset continues from the bank's selection over old and new patches
(:func:`grow_bank`): the grown bank is the greedy run seeded with the old selection, and lists the
old bank among its inputs.
"""

from __future__ import annotations

from dataclasses import replace

from eagle_cli import artifacts
from eagle_cli.artifacts import ArtifactRef
from eagle_cli.context import Context
from eagle_cli.errors import ArtifactError, ParameterError
from eagle_cli.expert.bank import grow_bank, members_to_add
from eagle_cli.formats.bank import bank_summary, open_bank, write_bank
from eagle_cli.formats.features import feature_parts, features_info, joined_params, read_features, write_joined
from eagle_cli.params import ExtractParams
from eagle_cli.settings import identity


def extraction_of(bank_ref: ArtifactRef, runtime: ExtractParams = ExtractParams()) -> tuple[str, ExtractParams]:
    """The category and extraction settings of a bank's training images (batch size and device from ``runtime``):
    the images to add are extracted with these."""
    trained = features_info(_training_features(bank_ref))
    return trained.category, replace(trained.extract, batch_size=runtime.batch_size, device=runtime.device)


def _training_features(bank_ref: ArtifactRef) -> ArtifactRef:
    try:
        return bank_ref.input("features")
    except ArtifactError as error:
        raise ArtifactError(f"Bank {bank_ref.id} cannot grow: its training features are gone or damaged ({error}). "
                            "Growing joins the old images' features with the new ones; refit with eagle fit-bank "
                            "on all images instead.") from None


def run_grow_bank(bank_ref: ArtifactRef, new: ArtifactRef, *, context: Context) -> ArtifactRef:
    """Grow the bank with the train features ``new`` (extracted with :func:`extraction_of`)."""
    bank = open_bank(bank_ref)
    old = _training_features(bank_ref)
    trained = features_info(old)
    if new.id == old.id:
        raise ParameterError(f"The images to add are the bank's own training images ({old.path}); nothing to add.")
    trained.lineage.check_matches(features_info(new).lineage,
                                  what="The bank's training images and the images to add")
    joined = join_features(old, new, context=context)

    def build(draft):
        # Both parts were checked as extracted (and the old one again by fit-bank); their hashes hold.
        features, _, _ = read_features(joined, check_finite=False)
        previous = bank.coreset()
        more = members_to_add(features.shape[0], features.shape[1], previous, bank.params)
        with context.reporter.task(f"grow bank {trained.category}", more) as advance:
            grown = grow_bank(features, previous, bank.params, seed=bank.seed, progress=advance)
        write_bank(draft, grown)
        draft.lineage = joined.lineage
        draft.summary = bank_summary(grown, added_images=features_info(new).n_images,
                                     parent_bank_size=len(previous.selected), grown_from=bank_ref.id)

    return artifacts.produce("bank", context=context, category=trained.category, params=identity(bank.params),
                             inputs=[joined, bank_ref], build=build)


def join_features(old: ArtifactRef, new: ArtifactRef, *, context: Context) -> ArtifactRef:
    """One train ``features`` artifact holding ``old``'s images, then ``new``'s, by reference: no rows are
    copied, so growing costs what the new images cost, not a rewrite of the old ones."""
    parts = feature_parts(old) + [new]

    return artifacts.produce("features", context=context, category=old.category, params=joined_params(parts),
                             inputs=parts, build=lambda draft: write_joined(draft, parts))
