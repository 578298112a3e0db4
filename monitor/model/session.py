"""One ONNX classifier: tokenise, pad per batch, run, softmax; shared by serving and training evaluation.

Batches are padded to the longest text in the batch rounded up to a
multiple of 8, not to max_length: short tweets must not pay for long
headlines, and a bounded set of shapes keeps onnxruntime's memory flat.
Larger batches are sorted by token count and run in chunks of
`bucket_size`, so each chunk is padded only to its own longest text
(bench/README.md has the measurement). Training evaluates exported models
through this same class, so its reports describe what the worker serves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monitor.core.scores import softmax
from monitor.model.batching import BUCKET_SIZE, PAD_MULTIPLE
from monitor.model.bundle import Bundle, BundleError, tokenizer_pad_id


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
    produces denormal floats, which x86 handles in microcode; flushing them
    makes a batch markedly faster (bench/README.md, "Denormals"). Values below
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


class Classifier:
    """A tokenizer file and an ONNX graph with one logits output per task."""

    def __init__(
        self,
        model_file: Path,
        tokenizer_file: Path,
        outputs: Mapping[str, str],
        max_length: int,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        intra_op_threads: int = 0,
    ) -> None:
        ort = _import_ort()
        from tokenizers import Tokenizer

        self.outputs = dict(outputs)  # task -> output name, in output order
        self.max_length = max_length
        try:
            self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        except Exception as exc:
            raise BundleError(f"tokenizer {tokenizer_file} cannot be loaded: {exc}") from exc
        self.pad_id = tokenizer_pad_id(self.tokenizer)
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_length)
        opts = session_options(intra_op_threads)
        try:
            self.session = ort.InferenceSession(str(model_file), sess_options=opts, providers=list(providers))
        except Exception as exc:
            raise BundleError(f"ONNX model {model_file} cannot be loaded: {exc}") from exc
        self.input_names = {i.name for i in self.session.get_inputs()}
        found = {o.name for o in self.session.get_outputs()}
        for task, output in self.outputs.items():
            if output not in found:
                raise BundleError(f"ONNX model has no output '{output}' for task '{task}'")
        missing = {"input_ids", "attention_mask"} - self.input_names
        if missing:
            raise BundleError(f"ONNX model lacks inputs {sorted(missing)}")

    @classmethod
    def from_bundle(cls, bundle: Bundle, providers: Sequence[str] = ("CPUExecutionProvider",),
                    intra_op_threads: int = 0) -> Classifier:  # fmt: skip
        outputs = {t.name: t.output for t in bundle.tasks.values()}
        return cls(bundle.model_file, bundle.tokenizer_file, outputs, bundle.max_length, providers, intra_op_threads)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def logits(self, ids: list[list[int]]) -> dict[str, np.ndarray]:
        """Raw logits per task: what a calibrated softmax, or fitting the calibration, starts from."""
        longest = max(len(x) for x in ids)
        width = min(-(-longest // PAD_MULTIPLE) * PAD_MULTIPLE, max(longest, self.max_length))
        input_ids = np.full((len(ids), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for i, row in enumerate(ids):
            input_ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        outs = self.session.run(list(self.outputs.values()), feeds)
        return {t: o.astype(np.float32) for t, o in zip(self.outputs, outs, strict=True)}

    def run(self, ids: list[list[int]]) -> dict[str, np.ndarray]:
        """Uncalibrated probabilities per task (temperature 1)."""
        return {t: softmax(o) for t, o in self.logits(ids).items()}

    def run_bucketed(self, ids: list[list[int]], bucket_size: int = BUCKET_SIZE,
                     raw: bool = False) -> dict[str, np.ndarray]:  # fmt: skip
        """Run length-sorted chunks of at most `bucket_size` texts; rows come back in input order.

        raw: logits instead of probabilities, for a caller that applies a per-item temperature.
        """
        step = self.logits if raw else self.run
        if bucket_size <= 0 or len(ids) <= bucket_size:
            return step(ids)
        order = np.argsort([len(x) for x in ids], kind="stable")
        parts = [step([ids[i] for i in order[s : s + bucket_size]]) for s in range(0, len(ids), bucket_size)]
        out: dict[str, np.ndarray] = {}
        for task in parts[0]:
            stacked = np.concatenate([p[task] for p in parts])
            restored = np.empty_like(stacked)
            restored[order] = stacked
            out[task] = restored
        return out
