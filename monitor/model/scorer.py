"""Scoring raw texts with one or more bundles: the worker's view of the model.

Runs in a worker thread (never on the event loop). Several bundles may be
combined (e.g. separate topic and sentiment models); one multi-task bundle
scores every task in one forward pass (monitor/model/session.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from monitor.core.scores import TaskScore
from monitor.model.bundle import Bundle, BundleError, load_bundle
from monitor.model.normalize import normalize_text
from monitor.model.session import BUCKET_SIZE, Classifier, choose_providers

log = logging.getLogger(__name__)

# Characters kept before tokenising: far beyond what max_length tokens can
# use, and it bounds the cost of a 10 MB text to a constant.
CHARS_PER_TOKEN_BUDGET = 16


@dataclass(frozen=True)
class _Loaded:
    bundle: Bundle
    classifier: Classifier


def model_text(text: str, title: str | None, max_length: int) -> str:
    """The string the model sees: title (if any) then text, cut and normalised."""
    budget = max_length * CHARS_PER_TOKEN_BUDGET
    raw = text if not title or title.strip() in text else f"{title.strip()}. {text}"
    return normalize_text(raw[:budget])


class Scorer:
    """Scores batches of raw texts with one or more bundles; thread-safe for run()."""

    def __init__(
        self,
        bundles: Sequence[Bundle],
        providers: str = "auto",
        intra_op_threads: int = 0,
        bucket_size: int = BUCKET_SIZE,
    ) -> None:
        if not bundles:
            raise BundleError("no model bundle given")
        self.providers = choose_providers(providers)
        self.bucket_size = bucket_size
        self.models = [_Loaded(b, Classifier.from_bundle(b, self.providers, intra_op_threads)) for b in bundles]
        seen: set[str] = set()
        for m in self.models:
            dup = seen & set(m.bundle.tasks)
            if dup:
                raise BundleError(f"task(s) {sorted(dup)} provided by two bundles")
            seen |= set(m.bundle.tasks)
        self.tasks = seen
        self.max_length = min(m.bundle.max_length for m in self.models)

    @classmethod
    def from_paths(
        cls,
        paths: Sequence[str | os.PathLike[str]],
        variant: str = "auto",
        providers: str = "auto",
        intra_op_threads: int = 0,
        bucket_size: int = BUCKET_SIZE,
    ) -> Scorer:
        return cls([load_bundle(p, variant) for p in paths], providers, intra_op_threads, bucket_size)

    @property
    def ident(self) -> dict[str, str]:
        """Model identity for scored items: one bundle's, or the joined names of several."""
        if len(self.models) == 1:
            return self.models[0].bundle.ident
        return {
            "name": "+".join(m.bundle.name for m in self.models),
            "version": "+".join(m.bundle.version for m in self.models),
            "sha256": "+".join(m.bundle.sha256[:16] for m in self.models),
        }

    def score(self, texts: Sequence[str]) -> list[dict[str, TaskScore]]:
        """Score already-prepared texts (see `model_text`); one dict per text, task -> score."""
        if not texts:
            return []
        results: list[dict[str, TaskScore]] = [{} for _ in texts]
        for model in self.models:
            ids = model.classifier.encode(texts)
            probs = model.classifier.run_bucketed(ids, self.bucket_size)
            for task_name, p in probs.items():
                labels = model.bundle.tasks[task_name].labels
                if p.shape[1] != len(labels):
                    raise BundleError(
                        f"task '{task_name}': the model outputs {p.shape[1]} scores but the manifest lists "
                        f"{len(labels)} labels"
                    )
                best = p.argmax(axis=1)
                for i in range(len(texts)):
                    results[i][task_name] = TaskScore(
                        label=labels[int(best[i])],
                        confidence=float(p[i, best[i]]),
                        probs={lab: round(float(v), 5) for lab, v in zip(labels, p[i], strict=True)},
                    )
        return results
