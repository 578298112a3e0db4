"""What a model says about one text, in plain types: the contract between the model and everything after it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TaskScore:
    label: str
    confidence: float
    probs: dict[str, float]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def sentiment_score(probs: dict[str, float]) -> float:
    """p(positive) - p(negative), in [-1, 1]."""
    return float(probs.get("positive", 0.0) - probs.get("negative", 0.0))
