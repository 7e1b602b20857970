"""The calibration's exact search against what it replaced and against the ways around it.

    python -m benchmarks.exact_search [--size 2048] [--train 20] [--images 3] [--coreset-max auto]

fit-threshold searches every patch of every training image against the other images' entries
(``BankIndex.search_leave_own_out``: faiss holds the bank image by image and searches the two runs beside the
image's own). On the ``highres`` brick category (``--tile auto``, MobileNetV2 ImageNet weights, the bank as
fit-bank makes it), for the patches of ``--images`` training images, each timed in this process, per image:

* ``leave-own-out``: the calibration's search (the baseline; k = 1, the default);
* ``listed``: the search it replaced — faiss's flat index listing the k + 32 nearest of any image, the first k of
  other images kept (an exact search followed for rows with fewer);
* ``filtered``: the nearest among the candidates a cheaper search finds in the bank's top principal components,
  then measured exactly. A projection onto orthonormal components never lengthens a distance, so the candidates'
  best is proven exact where it is no farther than the first candidate left out; ``certified`` is that share of
  patches (the rest would need the full search again).

The refill's orphans (an image's patches covered by another image's entry) are settled when an entry not from the
covering image lies within the covering radius in the bank's projection, and only the rest are searched again. A
second table gives the share of orphans each candidate set settles: the list the replaced search made; the
calibration's — the nearest entry and the ``--neighbours`` entries nearest the orphan's covering entry (found once
per bank); and every entry (the most any candidates can settle).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.highres import stages
from benchmarks.tiled_cost import EXTRACT
from eagle_cli.context import Context
from eagle_cli.data import DataSource
from eagle_cli.data.synthetic import generate
from eagle_cli.expert.calibration import _nearest_listed
from eagle_cli.expert.coreset import project, projection
from eagle_cli.expert.faiss_after_torch import faiss
from eagle_cli.expert.knn import BankIndex
from eagle_cli.expert.peak_calibration import principal_components
from eagle_cli.formats.bank import StoredBank, open_bank
from eagle_cli.formats.features import read_features
from eagle_cli.params import BankParams, CalibrationParams, parse_count


class Orphans:
    """What settling an image's orphans needs: the bank in its projection, each entry's nearest entries there, each
    training patch's covering entry and the covering radius."""

    def __init__(self, stored: StoredBank, rows: np.ndarray, neighbours: int):
        coreset = stored.coreset()
        self.weight = projection(rows.shape[1], stored.params.proj_dim, generator=torch.Generator().manual_seed(
            stored.seed))
        self.bank = project(torch.from_numpy(rows), self.weight)
        self.near = faiss.knn(self.bank.numpy(), self.bank.numpy(), neighbours)[1]
        self.cover, self.radius = coreset.cover.numpy(), float(coreset.cover_sq_dist.max())

    def settled(self, patches: np.ndarray, own: int, image_ids: np.ndarray, listed: np.ndarray, nearest: np.ndarray
                ) -> dict:
        """Shares of the image's orphans within the radius of an entry among the listed, among the nearest and its
        cover's neighbours, and among all entries not from the covering image."""
        cover = self.cover[own * len(patches):(own + 1) * len(patches)]
        orphans = np.flatnonzero(image_ids[cover] != own)
        excluded, points = image_ids[cover[orphans]], project(torch.from_numpy(patches[orphans]), self.weight)
        everywhere = np.empty(len(orphans), dtype=np.float32)
        for image in np.unique(excluded):
            mine = np.flatnonzero(excluded == image)
            everywhere[mine] = faiss.knn(points[mine].numpy(), self.bank[image_ids != image].numpy(), 1)[0][:, 0]
        by_cover = np.concatenate([nearest[orphans], self.near[cover[orphans]]], axis=1)
        return {name: float(np.mean(dist <= self.radius)) for name, dist in (
            ("listed", _nearest_listed(points, self.bank, listed[orphans], image_ids, excluded)),
            ("cover", _nearest_listed(points, self.bank, by_cover, image_ids, excluded)),
            ("everywhere", everywhere))} | {"orphans": len(orphans) / len(patches)}


def measure(patches: np.ndarray, own: int, index: BankIndex, bank: np.ndarray, orphans: Orphans, *, listed: int,
            dims: int, candidates: int) -> dict:
    """Seconds of each search over one image's ``patches``, what the filtered one proved and what each candidate
    set settles of the image's orphans."""
    queries = torch.from_numpy(patches)
    start = time.perf_counter()
    nearest, nearest_rows = index.search_leave_own_out(queries, 1, np.full(len(patches), own))
    nearest_s = time.perf_counter() - start

    image_ids = index.image_ids
    start = time.perf_counter()
    dist, listed_rows = index.search(queries, listed)
    others = image_ids[listed_rows] != own
    first = dist[np.arange(len(dist)), others.argmax(1)]
    short = np.flatnonzero(~others.any(1))
    first[short] = index.search_leave_own_out(queries[torch.as_tensor(short)], 1, np.full(len(short), own))[0][:, 0]
    listed_s = time.perf_counter() - start

    others = np.ascontiguousarray(bank[image_ids != own])
    mean, components, _ = principal_components(others, dims)
    reduced = np.ascontiguousarray((others - mean) @ components)
    start = time.perf_counter()
    low, found = faiss.knn(np.ascontiguousarray((patches - mean) @ components), reduced, candidates + 1)
    chosen = np.ascontiguousarray(found[:, :candidates])
    exact = np.empty(chosen.shape, dtype=np.float32)
    faiss.fvec_L2sqr_by_idx(faiss.swig_ptr(exact), faiss.swig_ptr(patches), faiss.swig_ptr(others),
                            faiss.swig_ptr(chosen), patches.shape[1], len(patches), candidates)
    best = exact.min(1)
    filtered_s = time.perf_counter() - start
    # A margin for float rounding of the reduced distances, so no patch is called proven by rounding.
    certified = best <= low[:, candidates] * (1 - 1e-4)
    nearest = nearest[:, 0]
    return {"leave-own-out": nearest_s, "listed": listed_s, "filtered": filtered_s,
            "certified": float(certified.mean()),
            # Each search's nearest against the calibration's (the filtered one where it proved it).
            "listed agrees": float(np.isclose(first, nearest, rtol=1e-4).mean()),
            "filtered agrees": float(np.isclose(best[certified], nearest[certified], rtol=1e-4).mean()),
            "settled": orphans.settled(patches, own, image_ids, listed_rows, nearest_rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--train", type=int, default=20)
    parser.add_argument("--images", type=int, default=3, help="Training images whose patches are searched.")
    parser.add_argument("--coreset-max", default="auto", help="The bank's most entries (eagle fit-bank).")
    parser.add_argument("--dims", type=int, default=32, help="Principal components of the filtered search.")
    parser.add_argument("--candidates", type=int, default=32, help="Candidates the filtered search measures.")
    args = parser.parse_args()
    torch.set_num_threads(2)
    faiss.omp_set_num_threads(2)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        generate(root / "data", categories=("brick",), variation="highres", n_train=args.train, n_test_good=1,
                 n_test_per_defect=0, size=args.size, seed=0)
        chain = stages(DataSource(root=root / "data"), "brick", EXTRACT,
                       BankParams(coreset_max=parse_count(args.coreset_max)))
        context = Context(artifacts=root / "artifacts")
        made = {"extract": chain["extract"]({}, context)}
        made["fit-bank"] = chain["fit-bank"](made, context)
        features = read_features(made["extract"])[0]
        stored = open_bank(made["fit-bank"])
        index = stored.index(backend="faiss", device="cpu")
        bank, neighbours = index.rows(), CalibrationParams().extra_neighbours
        _, _, share = principal_components(bank, args.dims)
        orphans = Orphans(stored, bank, neighbours)
        rows = [measure(np.ascontiguousarray(features[i].float().numpy()), i, index, bank, orphans,
                        listed=1 + neighbours, dims=args.dims, candidates=args.candidates)
                for i in range(min(args.images, len(features)))]
    patches = features.shape[1]
    print(f"{args.size} px: {patches} patches per image against {len(bank)} entries of {bank.shape[1]} dimensions; "
          f"{args.dims} principal components hold {share:.1%} of the bank's variance.\n")
    print("| search | s / image | × the calibration's search | patches proven exact | same distance as the "
          "calibration's |")
    print("|---|---|---|---|---|")
    baseline = np.mean([r["leave-own-out"] for r in rows])
    for name, label in (("leave-own-out", "leave-own-out: the other images' runs, 1 nearest (the calibration's)"),
                        ("listed", f"listed: flat, {1 + neighbours} nearest (the search it replaced)"),
                        ("filtered", f"filtered: {args.candidates} in {args.dims} components, then exact")):
        seconds = np.mean([r[name] for r in rows])
        proven = f"{np.mean([r['certified'] for r in rows]):.3f}" if name == "filtered" else "1"
        agrees = f"{np.mean([r[name + ' agrees'] for r in rows]):.4f}" if name != "leave-own-out" else "1"
        # Three significant digits: a small set's search takes milliseconds.
        print(f"| {label} | {seconds:.3g} | {seconds / baseline:.2f} | {proven} | {agrees} |")
    settled = {key: np.mean([r["settled"][key] for r in rows]) for key in rows[0]["settled"]}
    print(f"\nOrphans: {settled['orphans']:.1%} of an image's patches are covered by another image's entry.\n")
    print("| an orphan's candidates | orphans settled (an entry not from the covering image within the radius) |")
    print("|---|---|")
    for key, label in (("listed", f"by list: the {1 + neighbours} the replaced search listed"),
                       ("cover", f"by cover: the nearest, and the {neighbours} entries nearest its cover "
                                 "(the calibration's)"),
                       ("everywhere", "by every entry: the most any candidates settle")):
        print(f"| {label} | {settled[key]:.4f} |")

if __name__ == "__main__":
    main()
