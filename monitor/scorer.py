"""ONNX scoring of texts: tokenise, pad per batch, run, softmax.

Runs in a worker thread (never on the event loop). Batches are padded to
the longest text in the batch rounded up to a multiple of 8, not to
max_length: short tweets must not pay for long headlines, and a bounded
set of shapes keeps onnxruntime's memory flat (onnxruntime #11118).
Larger batches are sorted by token count and run in chunks of
`bucket_size`, so each chunk is padded only to its own longest text
(measured in bench/: see bench/README.md). Several bundles may be
combined (e.g. separate topic and sentiment models); one multi-task
bundle scores every task in one forward pass.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from monitor.bundle import Bundle, BundleError, load_bundle, tokenizer_pad_id
from monitor.normalize import normalize_text

log = logging.getLogger(__name__)

PAD_MULTIPLE = 8
# Characters kept before tokenising: far beyond what max_length tokens can
# use, and it bounds the cost of a 10 MB text to a constant.
CHARS_PER_TOKEN_BUDGET = 16


def _import_ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise BundleError(
            "onnxruntime is not installed: pip install 'finsent[cpu]' (or 'finsent[gpu]' on a CUDA machine)"
        ) from None
    return ort


def choose_providers(preference: str = "auto") -> list[str]:
    ort = _import_ort()
    available = ort.get_available_providers()
    if preference == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available and preference in ("auto", "cuda"):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if preference == "cuda":
        raise BundleError("providers=cuda asked for, but this onnxruntime build has no CUDAExecutionProvider")
    return ["CPUExecutionProvider"]


def session_options(intra_op_threads: int = 0, denormals_as_zero: bool = True) -> Any:
    """Session options every finsent session uses.

    Denormals as zero: attention softmax over masked and very negative scores
    produces denormal floats, which x86 handles in microcode; flushing them cut
    Softmax from 14 to 2.7 ms per batch of 32 (profiled, dynamic INT8 MiniLM) and
    the whole batch by 7-19 % in fp32 and INT8 (bench/README.md). Values below
    1e-38 change no probability a person or an alert could see.
    """
    ort = _import_ort()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_threads:
        opts.intra_op_num_threads = intra_op_threads
    if denormals_as_zero:
        opts.add_session_config_entry("session.set_denormal_as_zero", "1")
    opts.log_severity_level = 3
    return opts


@dataclass(frozen=True)
class TaskScore:
    label: str
    confidence: float
    probs: dict[str, float]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class _Model:
    """One bundle: tokenizer + InferenceSession."""

    def __init__(self, bundle: Bundle, providers: list[str], intra_op_threads: int = 0) -> None:
        ort = _import_ort()
        from tokenizers import Tokenizer

        self.bundle = bundle
        try:
            self.tokenizer = Tokenizer.from_file(str(bundle.tokenizer_file))
        except Exception as exc:
            raise BundleError(f"tokenizer {bundle.tokenizer_file} cannot be loaded: {exc}") from exc
        self.pad_id = tokenizer_pad_id(self.tokenizer)
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=bundle.max_length)
        opts = session_options(intra_op_threads)
        try:
            self.session = ort.InferenceSession(str(bundle.model_file), sess_options=opts, providers=providers)
        except Exception as exc:
            raise BundleError(f"ONNX model {bundle.model_file} cannot be loaded: {exc}") from exc
        self.input_names = {i.name for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        for task in bundle.tasks.values():
            if task.output not in outputs:
                raise BundleError(f"ONNX model has no output '{task.output}' for task '{task.name}'")
        missing = {"input_ids", "attention_mask"} - self.input_names
        if missing:
            raise BundleError(f"ONNX model lacks inputs {sorted(missing)}")

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def run(self, ids: list[list[int]]) -> dict[str, np.ndarray]:
        longest = max(len(x) for x in ids)
        width = min(-(-longest // PAD_MULTIPLE) * PAD_MULTIPLE, max(longest, self.bundle.max_length))
        input_ids = np.full((len(ids), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for i, row in enumerate(ids):
            input_ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        names = [t.output for t in self.bundle.tasks.values()]
        outs = self.session.run(names, feeds)
        return {t.name: softmax(o.astype(np.float32)) for t, o in zip(self.bundle.tasks.values(), outs, strict=True)}

    def run_bucketed(self, ids: list[list[int]], bucket_size: int) -> dict[str, np.ndarray]:
        """Run length-sorted chunks of at most `bucket_size` texts; rows come back in input order."""
        if bucket_size <= 0 or len(ids) <= bucket_size:
            return self.run(ids)
        order = np.argsort([len(x) for x in ids], kind="stable")
        parts = [self.run([ids[i] for i in order[s : s + bucket_size]]) for s in range(0, len(ids), bucket_size)]
        out: dict[str, np.ndarray] = {}
        for task in parts[0]:
            stacked = np.concatenate([p[task] for p in parts])
            restored = np.empty_like(stacked)
            restored[order] = stacked
            out[task] = restored
        return out


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
        bucket_size: int = 16,
    ) -> None:
        if not bundles:
            raise BundleError("no model bundle given")
        self.providers = choose_providers(providers)
        self.bucket_size = bucket_size
        self.models = [_Model(b, self.providers, intra_op_threads) for b in bundles]
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
        bucket_size: int = 16,
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
            ids = model.encode(texts)
            probs = model.run_bucketed(ids, self.bucket_size)
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


def sentiment_score(probs: dict[str, float]) -> float:
    """p(positive) - p(negative), in [-1, 1]."""
    return float(probs.get("positive", 0.0) - probs.get("negative", 0.0))
