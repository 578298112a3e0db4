"""Scoring raw texts with one or more bundles: the worker's view of the model.

Runs in a worker thread (never on the event loop). Several bundles may be
combined: separate topic and sentiment models, or models for different
languages. Each item is routed by its language: for every task, the first
bundle listed that declares the item's language (manifest `languages`)
scores it. An item in a language no bundle declares goes to the default
route, the first bundle's first language. One multi-task bundle scores
every task in one forward pass (monitor/model/session.py); its logits
become probabilities at the temperature its manifest gives the task in the
route's language (monitor/model/bundle.py, "calibration").
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from monitor.core.language import served_language
from monitor.core.scores import TaskScore, row_temperatures, softmax
from monitor.model.batching import BUCKET_SIZE
from monitor.model.bundle import Bundle, BundleError, load_bundle
from monitor.model.normalize import normalize_text
from monitor.model.session import Classifier, choose_providers

log = logging.getLogger(__name__)

# Characters kept before tokenising: far beyond what max_length tokens can
# use, and it bounds the cost of a 10 MB text to a constant.
CHARS_PER_TOKEN_BUDGET = 16


@dataclass(frozen=True)
class _Loaded:
    bundle: Bundle
    classifier: Classifier


@dataclass(frozen=True)
class Route:
    """The bundles that score one language, each with the tasks it answers there."""

    lang: str
    parts: tuple[tuple[_Loaded, tuple[str, ...]], ...]

    @property
    def tasks(self) -> frozenset[str]:
        return frozenset(t for _, tasks in self.parts for t in tasks)

    @property
    def ident(self) -> dict[str, str]:
        """Model identity for the items this route scores."""
        return joined_ident([m.bundle for m, _ in self.parts])


def joined_ident(bundles: Sequence[Bundle]) -> dict[str, str]:
    """One bundle's identity, or the joined names, versions and short hashes of several."""
    if len(bundles) == 1:
        return dict(bundles[0].ident)
    return {
        "name": "+".join(b.name for b in bundles),
        "version": "+".join(b.version for b in bundles),
        "sha256": "+".join(b.sha256[:16] for b in bundles),
    }


def plan_routes(models: Sequence[_Loaded]) -> dict[str, Route]:
    """Per language, per task: the first bundle that declares the language and has the task.

    Every route must answer the same tasks as the default (first) one, so a
    scored record has the same fields whatever its language.
    """
    langs: list[str] = []
    for m in models:
        langs += [lang for lang in m.bundle.languages if lang not in langs]
    routes: dict[str, Route] = {}
    for lang in langs:
        chosen: dict[int, list[str]] = {}
        for task in {t: None for m in models for t in m.bundle.tasks}:
            for i, m in enumerate(models):
                if lang in m.bundle.languages and task in m.bundle.tasks:
                    chosen.setdefault(i, []).append(task)
                    break
        routes[lang] = Route(lang, tuple((models[i], tuple(ts)) for i, ts in sorted(chosen.items())))
    default = routes[langs[0]]
    for route in routes.values():
        if route.tasks != default.tasks:
            missing = sorted(default.tasks - route.tasks) or sorted(route.tasks - default.tasks)
            raise BundleError(
                f"no bundle answers {', '.join(missing)} for language '{route.lang}' while '{default.lang}' has it: "
                "every language needs the same tasks"
            )
    return routes


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
        self.routes = plan_routes(self.models)
        self.default_lang = next(iter(self.routes))
        self.tasks = set(self.routes[self.default_lang].tasks)
        self.max_length = min(m.bundle.max_length for m in self.models)
        used = {id(m) for r in self.routes.values() for m, _ in r.parts}
        unused = [str(m.bundle.path) for m in self.models if id(m) not in used]
        if unused:
            raise BundleError(f"bundle(s) {', '.join(unused)} would score nothing: an earlier bundle answers "
                              "every task in every language they declare")  # fmt: skip

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
    def languages(self) -> tuple[str, ...]:
        """Languages some bundle declares, the default one first."""
        return tuple(self.routes)

    def route(self, lang: str | None) -> Route:
        """The route for a language; the default route for one no bundle declares."""
        return self.routes[served_language(lang, list(self.routes))]

    @property
    def ident(self) -> dict[str, str]:
        """Identity of everything in service (the model-info metric)."""
        return joined_ident([m.bundle for m in self.models])

    def score(self, texts: Sequence[str], langs: Sequence[str | None] | None = None) -> list[dict[str, TaskScore]]:
        """Score already-prepared texts (see `model_text`), each by its language's route; task -> score."""
        if not texts:
            return []
        results: list[dict[str, TaskScore]] = [{} for _ in texts]
        # Languages served by the same bundles share one forward pass (a multilingual bundle runs once).
        groups: dict[tuple[tuple[int, tuple[str, ...]], ...], tuple[Route, list[int]]] = {}
        route_langs: list[str] = []  # the language whose calibration applies: the route's
        for i in range(len(texts)):
            route = self.route(langs[i] if langs else None)
            route_langs.append(route.lang)
            key = tuple((id(m), tasks) for m, tasks in route.parts)
            groups.setdefault(key, (route, []))[1].append(i)
        for route, idx in groups.values():
            for model, tasks in route.parts:
                self._run(model, tasks, [texts[i] for i in idx], [results[i] for i in idx],
                          [route_langs[i] for i in idx])  # fmt: skip
        return results

    def _run(self, model: _Loaded, tasks: Sequence[str], texts: list[str], into: list[dict[str, TaskScore]],
             langs: list[str]) -> None:  # fmt: skip
        ids = model.classifier.encode(texts)
        logits = model.classifier.run_bucketed(ids, self.bucket_size, raw=True)
        for task_name in tasks:
            p = softmax(logits[task_name], row_temperatures(model.bundle.temperatures, task_name, langs))
            labels = model.bundle.tasks[task_name].labels
            if p.shape[1] != len(labels):
                raise BundleError(
                    f"task '{task_name}': the model outputs {p.shape[1]} scores but the manifest lists "
                    f"{len(labels)} labels"
                )
            best = np.asarray(p).argmax(axis=1)
            for i, out in enumerate(into):
                out[task_name] = TaskScore(
                    label=labels[int(best[i])],
                    confidence=float(p[i, best[i]]),
                    probs={lab: round(float(v), 5) for lab, v in zip(labels, p[i], strict=True)},
                )
