from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from eagle_cli import metrics
from eagle_cli.data.images import load_mask
from eagle_cli.formats.scores import read_maps, read_scores


def test_image_auroc_hand_case_and_single_class():
    # 0.9 > all normals, 0.4 beats one of two normals -> (2 + 1) / 4
    assert metrics.image_auroc([0, 0, 1, 1], [0.1, 0.5, 0.9, 0.4]) == pytest.approx(0.75)
    assert metrics.image_auroc([0, 0], [0.1, 0.2]) is None


def _streamed(masks, maps, levels=4096):
    pixels = metrics.PixelMetrics(float(maps.min()), float(maps.max()), levels)
    for mask, amap in zip(masks, maps, strict=True):
        pixels.add(amap, mask)
    return pixels


def exact_pro(masks, maps, fpr_limit=0.3):
    """PRO at every distinct map value (the definition), to check the streamed, fixed-threshold one against."""
    thresholds = np.unique(maps)[::-1]
    normal = np.sort(maps[~masks])
    regions = [np.sort(amap[labelled == r]) for mask, amap in zip(masks, maps, strict=True)
               for labelled, count in [ndimage.label(mask)] for r in range(1, count + 1)]
    fpr = 1.0 - np.searchsorted(normal, thresholds, side="left") / normal.size
    overlap = np.mean([1.0 - np.searchsorted(r, thresholds, side="left") / r.size for r in regions], axis=0)
    fpr, overlap = np.concatenate([[0.0], fpr]), np.concatenate([[0.0], overlap])
    cut = int(np.searchsorted(fpr, fpr_limit, side="right"))
    x, y = np.append(fpr[:cut], fpr_limit), np.append(overlap[:cut], np.interp(fpr_limit, fpr, overlap))
    return np.trapezoid(y, x) / fpr_limit


def test_streamed_pixel_auroc_and_pro_match_the_exact_ones_on_real_maps(washer_scores):
    # Real anomaly maps and masks of the tiny washer test set, scored by `eagle score`.
    rows = [r for r in read_scores(washer_scores) if r.label is not None]
    maps = np.stack([read_maps(washer_scores, r)[1] for r in rows])
    masks = np.stack([load_mask(Path(r.path.replace("/test/", "/ground_truth/").replace(".png", "_mask.png")),
                                (r.width, r.height)) if r.label else np.zeros(maps.shape[1:], bool)
                      for r in rows])
    pixels = _streamed(masks, maps)
    assert pixels.pixel_auroc() == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=0.002)
    assert pixels.pro() == pytest.approx(exact_pro(masks, maps), abs=0.002)
    summary = washer_scores.summary  # what eagle score wrote, streamed from its shards
    assert 0.5 < summary["pixel_auroc"] <= 1 and 0 < summary["pro"] <= 1


def test_streamed_metrics_do_not_depend_on_how_the_maps_are_split():
    rng = np.random.default_rng(0)
    masks = rng.random((6, 16, 16)) > 0.85
    maps = rng.random((6, 16, 16)) + masks
    whole = _streamed(masks, maps)
    assert whole.pixel_auroc() == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=0.002)
    assert whole.pro() == pytest.approx(exact_pro(masks, maps), abs=0.002)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pixels_fall_at_the_thresholds_a_binary_search_puts_them(dtype):
    pixel = metrics.PixelMetrics(-1.3, 7.7, levels=4096)
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(2, 3, 100_000), pixel.edges, np.nextafter(pixel.edges, -np.inf),
                             [-50.0, 50.0, np.inf, -np.inf, np.nan]]).astype(dtype)
    np.testing.assert_array_equal(pixel._bins(values),
                                  np.searchsorted(pixel.edges, values, side="right") - 1)


def test_pro_perfect_inverted_and_region_weighted():
    masks = np.zeros((2, 20, 20), bool)
    masks[0, 2:4, 2:4] = True      # a small region
    masks[1, 5:15, 5:15] = True    # a large region
    assert _streamed(masks, masks.astype(float)).pro() == pytest.approx(1.0, abs=0.01)
    assert _streamed(masks, (~masks).astype(float)).pro() < 0.05
    # Finding only the large region: the curve runs (0, 0) -> (0, 0.5) at threshold 1, then to (1, 1)
    # at threshold 0; cut at FPR 0.3 it reaches 0.65, area 0.3 * (0.5 + 0.65) / 2, normalised 0.575.
    only_large = np.zeros_like(masks, float)
    only_large[1, 5:15, 5:15] = 1
    assert _streamed(masks, only_large).pro() == pytest.approx(0.575)
    nothing = _streamed(np.zeros_like(masks), only_large)
    assert nothing.pro() is None and nothing.pixel_auroc() is None


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


def test_image_auroc_agrees_with_sklearn_with_and_without_ties():
    rng = np.random.default_rng(5)
    for _ in range(20):
        labels = rng.integers(0, 2, 50)
        scores = np.round(rng.random(50) + labels * 0.3, 1)  # rounding makes ties
        assert metrics.image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
