"""Holdout metrics: ROC AUC, PR AUC, Brier and calibration for classifiers; MAE, RMSE and R2 for regressors."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["calibration_table", "evaluate_regression", "evaluate_scores"]


def calibration_table(
    labels: npt.NDArray[np.int64], scores: npt.NDArray[np.float64], *, bins: int = 10
) -> list[dict[str, Any]]:
    """Per equal-width score bin: edges, count, mean predicted score, observed positive rate (None if empty)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    members = [index == b for b in range(bins)]
    return [
        {
            "lower": round(float(edges[b]), 6),
            "upper": round(float(edges[b + 1]), 6),
            "count": int(member.sum()),
            "mean_predicted": float(scores[member].mean()) if member.any() else None,
            "observed_rate": float(labels[member].mean()) if member.any() else None,
        }
        for b, member in enumerate(members)
    ]


def evaluate_scores(labels: npt.NDArray[np.int64], scores: npt.NDArray[np.float64]) -> dict[str, Any]:
    """ROC AUC and PR AUC (None when only one class is present), Brier score, calibration, counts."""
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    both = labels.min() != labels.max()
    return {
        "roc_auc": float(roc_auc_score(labels, scores)) if both else None,
        "pr_auc": float(average_precision_score(labels, scores)) if both else None,
        "brier": float(brier_score_loss(labels, scores)),
        "base_rate": float(labels.mean()),
        "calibration": calibration_table(labels, scores),
    }


def evaluate_regression(
    targets: npt.NDArray[np.float64], predicted: npt.NDArray[np.float64]
) -> dict[str, Any]:
    """MAE, RMSE, R2 (None when the targets are constant) and the targets' mean."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    varied = targets.min() != targets.max()
    return {
        "mae": float(mean_absolute_error(targets, predicted)),
        "rmse": float(np.sqrt(mean_squared_error(targets, predicted))),
        "r2": float(r2_score(targets, predicted)) if varied and targets.size > 1 else None,
        "target_mean": float(targets.mean()),
    }
