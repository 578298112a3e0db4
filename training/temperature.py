"""Temperature scaling: fit one softmax temperature per task and language, and measure what it buys.

Fine-tuned classifiers come out over-confident, more so the longer they
train, and the probabilities a bundle serves are read as they are: a scored
record's confidence, its sentiment score p(positive) - p(negative), every
trend averaged from those. Dividing the logits by one temperature T, fitted
by minimising the negative log-likelihood on held-out labelled text (Guo et
al., "On Calibration of Modern Neural Networks", 2017), fixes most of that
and changes no argmax: no label, count, alert or macro-F1 moves.

The fit uses the validation sets the report then measures, so the "after"
figures here are cross-fitted: each half of a pool is scored at the
temperature fitted on the other half. The shipped temperature is fitted on
the whole pool. Pure numpy; training/calibrate.py runs it on a bundle.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

from monitor.core.scores import softmax
from monitor.model.bundle import TEMPERATURE_RANGE
from training.metrics import expected_calibration_error

MIN_ROWS = 50  # a pool smaller than this keeps temperature 1: one scalar from a handful of rows is noise
GOLDEN = (math.sqrt(5) - 1) / 2


def nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of the true labels at one temperature."""
    z = logits.astype(np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float((log_norm - z[np.arange(len(y)), y]).mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray, iters: int = 80) -> float:
    """The temperature in TEMPERATURE_RANGE that minimises the NLL.

    The NLL is convex in 1/T, hence unimodal in log T, so a golden-section search over log T finds its
    minimum to well under 0.1 % in 80 steps, with no optimiser dependency.
    """
    lo, hi = math.log(TEMPERATURE_RANGE[0]), math.log(TEMPERATURE_RANGE[1])
    a, b = hi - GOLDEN * (hi - lo), lo + GOLDEN * (hi - lo)
    fa, fb = nll(logits, y, math.exp(a)), nll(logits, y, math.exp(b))
    for _ in range(iters):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - GOLDEN * (hi - lo)
            fa = nll(logits, y, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + GOLDEN * (hi - lo)
            fb = nll(logits, y, math.exp(b))
    return round(math.exp((lo + hi) / 2), 4)


def halves(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of range(n) into two halves (files are sorted by label: never split by position)."""
    idx = list(range(n))
    random.Random(seed).shuffle(idx)
    return np.array(sorted(idx[: n // 2]), dtype=np.int64), np.array(sorted(idx[n // 2 :]), dtype=np.int64)


def cross_fitted_probs(logits: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, tuple[float, float]]:
    """Each half's probabilities at the temperature fitted on the other half, and the two temperatures."""
    a, b = halves(len(y), seed)
    t_from_b, t_from_a = fit_temperature(logits[b], y[b]), fit_temperature(logits[a], y[a])
    out = np.empty_like(logits, dtype=np.float32)
    out[a] = softmax(logits[a], t_from_b)
    out[b] = softmax(logits[b], t_from_a)
    return out, (t_from_b, t_from_a)


@dataclass(frozen=True)
class PoolFit:
    """One task x language pool: the shipped temperature and the honest before/after."""

    temperature: float
    n: int
    fold_temperatures: tuple[float, float]
    after: np.ndarray  # cross-fitted probabilities, rows in pool order

    def summary(self, logits: np.ndarray, y: np.ndarray) -> dict[str, float | int | list[float]]:
        before = softmax(logits)
        return {"n": self.n, "temperature": self.temperature, "fold_temperatures": list(self.fold_temperatures),
                "ece_before": round(expected_calibration_error(before, y), 4),
                "ece_after": round(expected_calibration_error(self.after, y), 4),
                "nll_before": round(nll(logits, y, 1.0), 4),
                "nll_after": round(_nll_probs(self.after, y), 4)}  # fmt: skip


def fit_pool(logits: np.ndarray, y: np.ndarray, seed: int = 0) -> PoolFit | None:
    """None when the pool is too small to fit (it then keeps temperature 1)."""
    if len(y) < MIN_ROWS:
        return None
    after, folds = cross_fitted_probs(logits, y, seed)
    return PoolFit(fit_temperature(logits, y), len(y), folds, after)


def set_summary(logits: np.ndarray, y: np.ndarray, after: np.ndarray) -> dict[str, float | int]:
    """ECE and NLL of one set before (temperature 1) and after (the given probabilities)."""
    before = softmax(logits)
    return {"n": len(y), "ece_before": round(expected_calibration_error(before, y), 4),
            "ece_after": round(expected_calibration_error(after, y), 4),
            "nll_before": round(_nll_probs(before, y), 4), "nll_after": round(_nll_probs(after, y), 4)}  # fmt: skip


def _nll_probs(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0)).mean())
