"""Figures as embedded PNGs (matplotlib, no display): the DBT picture and the ROC curve of a category."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from eagle_cli.report.gather import CategoryRun  # noqa: E402


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def dbt_histogram(category: CategoryRun) -> str:
    """Calibration, test-normal and test-anomalous image scores, with τ and S_max."""
    figure, axis = plt.subplots(figsize=(5.5, 3.0))
    groups = [(f"calibration ({category.calibration})", category.calibration_scores, "#4c72b0"),
              ("test good", [r.score for r in category.rows if r.label == 0], "#55a868"),
              ("test defective", [r.score for r in category.rows if r.label == 1], "#c44e52")]
    values = np.concatenate([np.asarray(v, float) for _, v, _ in groups if len(v)] or [np.zeros(1)])
    bins = np.linspace(values.min(), values.max(), 30)
    for label, scores, colour in groups:
        if len(scores):
            # Densities, so a calibration set and a test set of different sizes compare by shape.
            axis.hist(scores, bins=bins, alpha=0.55, label=f"{label} ({len(scores)})", color=colour, density=True)
    tau, s_max = category.threshold.tau, category.threshold.s_max
    axis.axvline(tau, color="black", linestyle="--", label=f"τ = {tau:.4g}")
    axis.axvline(s_max, color="grey", linestyle=":", label=f"S_max = {s_max:.4g}")
    if tau < s_max:
        # At least 1.5 % of the axis wide, with a solid strip along it: a window much narrower than the range of
        # scores would otherwise be a hairline no one sees.
        low, high = axis.get_xlim()
        pad = max(0.0, 0.015 * (high - low) - (s_max - tau)) / 2
        inside = sum(r.uncertain for r in category.rows)
        axis.axvspan(tau - pad, s_max + pad, color="orange", alpha=0.25, label=f"CAAS window ({inside} images)")
        axis.axvspan(tau - pad, s_max + pad, ymax=0.05, color="darkorange")
    axis.set_xlabel("image score (squared L2)")
    axis.set_ylabel("density")
    axis.legend(fontsize=7)
    axis.set_title(category.name)
    return _png(figure)


def roc(category: CategoryRun) -> str | None:
    labelled = [r for r in category.rows if r.label is not None]
    labels = [r.label for r in labelled]
    if len(set(labels)) < 2:
        return None
    fpr, tpr, _ = roc_curve(labels, [r.score for r in labelled])
    figure, axis = plt.subplots(figsize=(3.0, 3.0))
    axis.plot(fpr, tpr, color="#c44e52")
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":")
    axis.set_xlabel("false-positive rate")
    axis.set_ylabel("true-positive rate")
    axis.set_title(f"{category.name} ROC")
    return _png(figure)
