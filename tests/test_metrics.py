import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from eagle_cli import metrics


def test_image_auroc_hand_case_and_single_class():
    # 0.9 > all normals, 0.4 beats one of two normals -> (2 + 1) / 4
    assert metrics.image_auroc([0, 0, 1, 1], [0.1, 0.5, 0.9, 0.4]) == pytest.approx(0.75)
    assert metrics.image_auroc([0, 0], [0.1, 0.2]) is None


def test_pixel_auroc_matches_sklearn_on_flattened_pixels():
    rng = np.random.default_rng(0)
    masks = rng.random((3, 8, 8)) > 0.8
    maps = rng.random((3, 8, 8)) + masks
    assert metrics.pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))


def test_pro_perfect_inverted_and_region_weighted():
    masks = np.zeros((2, 20, 20), bool)
    masks[0, 2:4, 2:4] = True      # a small region
    masks[1, 5:15, 5:15] = True    # a large region
    assert metrics.pro_score(masks, masks.astype(float)) == pytest.approx(1.0, abs=0.01)
    assert metrics.pro_score(masks, (~masks).astype(float)) < 0.05
    # Finding only the large region: the curve runs (0, 0) -> (0, 0.5) at threshold 1, then to (1, 1)
    # at threshold 0; cut at FPR 0.3 it reaches 0.65, area 0.3 * (0.5 + 0.65) / 2, normalised 0.575.
    only_large = np.zeros_like(masks, float)
    only_large[1, 5:15, 5:15] = 1
    assert metrics.pro_score(masks, only_large) == pytest.approx(0.575)
    assert metrics.pro_score(np.zeros_like(masks), only_large) is None


def test_verdict_metrics_hand_case():
    # TP=2, FN=1, FP=1, TN=1: accuracy on defects 2/3, on good parts 1/2
    result = metrics.verdict_metrics([1, 1, 1, 0, 0], [1, 1, 0, 1, 0])
    assert result == pytest.approx({"accuracy": 0.6, "balanced_accuracy": (2 / 3 + 1 / 2) / 2, "precision": 2 / 3,
                                    "recall": 2 / 3, "f1": 2 / 3, "overkill": 0.5, "miss": 1 / 3, "n": 5})


def test_verdict_metrics_agree_with_sklearn_on_random_cases():
    from sklearn.metrics import balanced_accuracy_score, f1_score

    rng = np.random.default_rng(3)
    for _ in range(20):
        labels, predictions = rng.integers(0, 2, 40), rng.integers(0, 2, 40)
        result = metrics.verdict_metrics(labels, predictions)
        assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predictions))
        assert result["f1"] == pytest.approx(f1_score(labels, predictions))


def test_verdict_metrics_without_defects_say_so_instead_of_zero():
    result = metrics.verdict_metrics([0, 0, 0], [0, 1, 0])
    assert result["recall"] is None and result["miss"] is None and result["balanced_accuracy"] is None
    assert result["overkill"] == pytest.approx(1 / 3)
