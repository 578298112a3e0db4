"""What a model says about one text, in plain types: the contract between the model and everything after it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TaskScore:
    label: str
    confidence: float
    probs: dict[str, float]


def softmax(logits: np.ndarray, temperature: float | np.ndarray = 1.0) -> np.ndarray:
    """Probabilities from logits divided by `temperature` (a scalar, or one per row as shape [batch, 1]).

    A temperature above 1 softens over-confident probabilities without changing which label wins, so a
    bundle's calibration (monitor/model/bundle.py) can never change a label, a count or an alert.
    """
    z = logits / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def row_temperatures(temperatures: Mapping[str, Mapping[str, float]], task: str, langs: Sequence[str]) -> np.ndarray:
    """A bundle's temperature (task -> language -> T) for one task and each row's language, shaped
    [batch, 1] for `softmax`; 1 where none is set."""
    per_lang = temperatures.get(task, {})
    return np.array([[per_lang.get(lang, 1.0)] for lang in langs], dtype=np.float32)


def sentiment_score(probs: dict[str, float]) -> float:
    """p(positive) - p(negative), in [-1, 1]."""
    return float(probs.get("positive", 0.0) - probs.get("negative", 0.0))
