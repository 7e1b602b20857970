"""Patches searched in groups of a bounded number of values, as the torch expert and the exported runtime search."""

import numpy as np

from eagle_cli.expert.faiss_after_torch import faiss
from eagle_cli.expert.scoring import patch_scores, searched_scores


def test_blocks_are_searched_in_bounded_groups_and_scored_in_their_order():
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(300, 8)).astype(np.float32)
    index = faiss.IndexFlatL2(8)
    index.add(bank)
    blocks = [rng.normal(size=(int(n), 8)).astype(np.float32) for n in rng.integers(1, 40, size=25)]
    searched: list[int] = []

    def search(queries: np.ndarray) -> np.ndarray:
        searched.append(queries.size)
        return index.search(queries, 3)[0]

    scores = searched_scores(iter(blocks), search, values=100)

    assert np.allclose(scores, patch_scores(index.search(np.concatenate(blocks), 3)[0]), rtol=1e-5)
    assert sum(searched) == sum(block.size for block in blocks)
    largest = max(block.size for block in blocks)
    assert all(100 <= size < 100 + largest for size in searched[:-1]), searched
    assert len(searched) > 1
