"""The synthetic sets the quality benchmarks run on (realistic by default): shared arguments, and the
categories per seed."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from eagle_cli.artifacts import ArtifactRef
from eagle_cli.context import Context
from eagle_cli.data.synthetic import VARIATION_CATEGORIES, generate
from eagle_cli.expert.faiss_after_torch import faiss
from eagle_cli.expert.knn import BankIndex
from eagle_cli.expert.scoring import images_from_distances
from eagle_cli.formats.bank import open_bank
from eagle_cli.formats.features import read_features


def add_arguments(parser: argparse.ArgumentParser, *, seeds: str, train: int, test_good: int,
                  variation: str = "realistic", size: int = 256) -> None:
    parser.set_defaults(variation=variation)
    parser.add_argument("--seeds", default=seeds)
    parser.add_argument("--categories", default=",".join(VARIATION_CATEGORIES[variation]))
    parser.add_argument("--size", type=int, default=size, help="Image side, px.")
    parser.add_argument("--train", type=int, default=train)
    parser.add_argument("--test-good", type=int, default=test_good)
    parser.add_argument("--test-per-defect", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, help="Keep data and artifacts here (reused by the next run).")


def labelled_scores(bank: ArtifactRef, test: ArtifactRef, index: BankIndex | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The labels and image scores of the test ``features`` artifact ``test`` under ``bank``'s own rule."""
    stored = open_bank(bank)
    k = stored.params.knn_k
    features, records, _ = read_features(test)
    index = index or stored.index(backend="faiss", device="cpu")
    dist, _ = index.search(features.reshape(-1, features.shape[-1]), k)
    return np.array([r.label for r in records]), images_from_distances(dist.reshape(len(records), -1, k),
                                                                       stored.params.image_top)


def add_row_files(parser: argparse.ArgumentParser) -> None:
    """``--json`` to keep a run's rows, ``--summarise`` to print the tables of kept rows (runs pool)."""
    parser.add_argument("--json", type=Path, help="Append every row to this JSON-lines file.")
    parser.add_argument("--summarise", type=Path, nargs="+", help="Only print the tables of earlier --json files.")


def measure_or_summarise(args: argparse.Namespace, measure: Callable[[Path, str, Context], dict],
                         summarise: Callable[[list[dict]], None]) -> None:
    """Summarise the rows of ``--summarise`` files, or measure them (kept in ``--json``) and summarise those."""
    if args.summarise:
        rows = [json.loads(line) for path in args.summarise for line in path.read_text().splitlines()]
    else:
        rows = measure_all(args, measure)
        if args.json:
            with open(args.json, "a") as fh:
                fh.writelines(json.dumps(row) + "\n" for row in rows)
    summarise(rows)


def measure_all(args: argparse.Namespace, measure: Callable[[Path, str, Context], dict]) -> list[dict]:
    """Run ``measure(root, category, context)`` on every category of every seed, in ``--workdir`` or a
    temporary folder; each row comes back with its seed."""
    with tempfile.TemporaryDirectory() as scratch:
        return list(_each_category(args, args.workdir or Path(scratch), measure))


def _each_category(args: argparse.Namespace, workdir: Path, measure: Callable[[Path, str, Context], dict]
                   ) -> Iterator[dict]:
    """Generate each seed's set once (kept in ``workdir``), run ``measure`` on every category, print each
    row as JSON as it comes and yield it with its seed."""
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    context = Context(artifacts=workdir / "artifacts")
    for seed in [int(s) for s in args.seeds.split(",")]:
        root = workdir / f"{args.variation}-{args.size}-{seed}-{args.train}-{args.test_good}-{args.test_per_defect}"
        if not root.is_dir():
            # Written aside and renamed: a run stopped while generating leaves no half set the next one reuses.
            partial = root.with_name(root.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            generate(partial, categories=tuple(args.categories.split(",")), variation=args.variation,
                     n_train=args.train, n_test_good=args.test_good, n_test_per_defect=args.test_per_defect,
                     size=args.size, seed=seed)
            partial.rename(root)
        for category in args.categories.split(","):
            row = {"seed": seed, **measure(root, category, context)}
            print(json.dumps(row), flush=True)
            yield row
