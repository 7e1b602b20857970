"""eagle fit-bank: a coreset memory bank of training patch features, as a ``bank`` artifact."""

from __future__ import annotations

from eagle_cli import artifacts
from eagle_cli.artifacts import ArtifactRef
from eagle_cli.context import Context
from eagle_cli.errors import ArtifactError
from eagle_cli.expert.bank import fit_bank
from eagle_cli.expert.coreset import coreset_size
from eagle_cli.formats.bank import bank_summary, write_bank
from eagle_cli.formats.features import features_info, read_features
from eagle_cli.params import BankParams
from eagle_cli.seeds import category_seed
from eagle_cli.settings import identity


def run_fit_bank(features_ref: ArtifactRef, params: BankParams, *, context: Context) -> ArtifactRef:
    """Select the coreset of a train-split features artifact for exact squared-L2 search; ``auto`` settings are
    decided by whether the features are tiled, and the bank records what they became."""
    info = features_info(features_ref)
    if info.split != "train":
        raise ArtifactError(f"{features_ref.path} holds {info.split} features; a bank is fitted on the train split "
                            "(good images only).")
    params = params.resolved(tiled=bool(info.lineage.tile))

    def build(draft):
        features, _, _ = read_features(features_ref)
        size = coreset_size(features.shape[0] * features.shape[1], params.coreset_ratio, params.coreset_max)
        with context.reporter.task(f"coreset {info.category}", size) as advance:
            bank = fit_bank(features, params, seed=category_seed(params.seed, info.category), progress=advance)
        write_bank(draft, bank)
        draft.lineage = features_ref.lineage
        draft.summary = bank_summary(bank)

    return artifacts.produce("bank", context=context, category=info.category, params=identity(params),
                             inputs=[features_ref], build=build)
