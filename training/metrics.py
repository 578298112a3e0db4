"""Classification metrics from probabilities: accuracy, macro-F1, per class, confusion, ECE."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def reliability(probs: np.ndarray, y_true: np.ndarray, bins: int = 15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per confidence bin (lo, hi]: mean confidence, accuracy and rows; empty bins are dropped.

    The one binning behind both the ECE and the reliability diagrams, so a plot shows the gaps its
    report's ECE sums.
    """
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    correct = (pred == np.asarray(y_true)).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    rows = np.bincount(which, minlength=bins)
    keep = rows > 0
    mean_conf = np.bincount(which, conf, bins)[keep] / rows[keep]
    acc = np.bincount(which, correct, bins)[keep] / rows[keep]
    return mean_conf, acc, rows[keep]


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, bins: int = 15) -> float:
    """Gap between confidence and accuracy, weighted over confidence bins (Guo et al. 2017)."""
    conf, acc, rows = reliability(probs, y_true, bins)
    return float((rows * np.abs(conf - acc)).sum() / max(rows.sum(), 1))


def classification_report(probs: np.ndarray, y_true: Sequence[int], labels: Sequence[str]) -> dict[str, Any]:
    y = np.asarray(y_true, dtype=np.int64)
    pred = probs.argmax(axis=1)
    n = len(labels)
    cm = confusion(y, pred, n)
    per: dict[str, dict[str, float]] = {}
    f1s = []
    for i, lab in enumerate(labels):
        tp = cm[i, i]
        p = tp / cm[:, i].sum() if cm[:, i].sum() else 0.0
        r = tp / cm[i, :].sum() if cm[i, :].sum() else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        per[lab] = {"precision": round(float(p), 4), "recall": round(float(r), 4), "f1": round(float(f), 4),
                    "support": int(cm[i, :].sum())}  # fmt: skip
        if cm[i, :].sum():
            f1s.append(f)
    return {
        "n": len(y),
        "accuracy": round(float((pred == y).mean()), 4),
        "macro_f1": round(float(np.mean(f1s)) if f1s else 0.0, 4),
        "ece": round(expected_calibration_error(probs, y), 4),
        "per_class": per,
        "confusion": cm.tolist(),
        "labels": list(labels),
    }
