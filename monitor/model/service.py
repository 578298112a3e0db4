"""The model in service, and swapping it for a new bundle without a restart.

The worker polls the bundle directory's manifest; when it changes, the new
bundle is loaded and verified in a thread and swapped in only if every
check passes (hashes, labels, ONNX loads, a smoke prediction). A corrupt
bundle is refused with one log line and the old model stays in service.
InferenceSession.run is thread-safe, so replacing the reference is enough.

Every model call runs on one scoring thread, and the first bundle is loaded
on that thread too: onnxruntime sets flush-to-zero/denormals-as-zero on the
thread that creates a process's first session (and on its own pool threads),
and the thread that calls `run` does a share of the work, so the speed-up
reaches every core while the event loop's thread keeps IEEE arithmetic.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from monitor.core.scores import TaskScore
from monitor.model.batching import BUCKET_SIZE
from monitor.model.bundle import MANIFEST, BundleError
from monitor.model.scorer import Scorer

log = logging.getLogger(__name__)

SMOKE_TEXT = "Shares fell sharply after the company cut its profit forecast."
SMOKE_TEXTS = {"en": SMOKE_TEXT, "zh": "公司下调全年利润预期，股价大跌。"}


def _stamp(paths: Sequence[Path]) -> tuple[tuple[int, int], ...]:
    out = []
    for p in paths:
        try:
            st = (Path(p) / MANIFEST).stat()
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((0, 0))
    return tuple(out)


class ModelService:
    def __init__(
        self,
        paths: Sequence[Path],
        variant: str = "auto",
        providers: str = "auto",
        threads: int = 0,
        bucket_size: int = BUCKET_SIZE,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.variant = variant
        self.providers = providers
        self.threads = threads
        self.bucket_size = bucket_size
        # One model call at a time, in this thread: onnxruntime uses the cores inside a call,
        # and the event loop stays free for heartbeats and fetches meanwhile.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finsent-score")
        self.scorer = self.executor.submit(self._load).result()
        self._stamp = _stamp(self.paths)

    def _load(self) -> Scorer:
        scorer = Scorer.from_paths(self.paths, self.variant, self.providers, self.threads, self.bucket_size)
        if "sentiment" not in scorer.tasks:
            raise BundleError("no bundle provides the 'sentiment' task")
        langs = list(scorer.languages)
        try:  # one text per language, so every route's bundles run once before serving
            result = scorer.score([SMOKE_TEXTS.get(lang, SMOKE_TEXT) for lang in langs], langs)
        except Exception as exc:
            # e.g. a manifest listing fewer labels than the model has outputs
            raise BundleError(f"smoke prediction failed: {type(exc).__name__}: {exc}") from exc
        if len(result) != len(langs) or any(set(r) != scorer.tasks for r in result):
            raise BundleError("smoke prediction did not return every task")
        return scorer

    def score(self, texts: Sequence[str], langs: Sequence[str | None] | None = None) -> list[dict[str, TaskScore]]:
        return self.scorer.score(texts, langs)

    def maybe_reload(self) -> bool | None:
        """Reload if the manifest changed. True: swapped; False: refused; None: unchanged."""
        stamp = _stamp(self.paths)
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        old = self.scorer.ident
        try:
            new = self._load()
        except Exception as exc:
            # Whatever is wrong with the new bundle, the old one stays in service.
            log.error("model bundle refused, keeping %s %s in service: %s", old["name"], old["version"], exc)
            return False
        self.scorer = new
        log.info("model swapped: %s %s -> %s %s", old["name"], old["version"], new.ident["name"], new.ident["version"])
        return True
