"""Score texts with an exported ONNX model the way the worker does: `tokenizer.json` + onnxruntime, no torch.

Evaluation, the parity check and `predict` all go through this runner, so
the numbers in a report describe the artefacts the worker serves (the
saved tokenizer file, its truncation, the ONNX graph), not the torch model
they came from. Only `monitor.bundle` and `monitor.normalize` are imported
from `monitor/`: the training side must not depend on the worker's code.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from monitor.bundle import Bundle, tokenizer_pad_id

PAD_MULTIPLE = 8  # as the worker pads: bounded set of shapes


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class OnnxRunner:
    """One ONNX file + one tokenizer file; `probs` returns softmax outputs per task, in input order."""

    def __init__(self, model_file: Path, tokenizer_file: Path, tasks: Sequence[str], max_length: int,
                 threads: int = 2) -> None:  # fmt: skip
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.tasks = list(tasks)
        self.max_length = max_length
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.pad_id = tokenizer_pad_id(self.tokenizer)
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_length)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        # As the worker's sessions (monitor.scorer.session_options): denormals flushed to zero.
        opts.add_session_config_entry("session.set_denormal_as_zero", "1")
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(model_file), sess_options=opts, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}

    @classmethod
    def from_bundle(cls, bundle: Bundle, threads: int = 2) -> OnnxRunner:
        return cls(bundle.model_file, bundle.tokenizer_file, list(bundle.tasks), bundle.max_length, threads)

    def _run(self, ids: list[list[int]]) -> list[np.ndarray]:
        longest = max(len(x) for x in ids)
        width = -(-longest // PAD_MULTIPLE) * PAD_MULTIPLE
        input_ids = np.full((len(ids), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for i, row in enumerate(ids):
            input_ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        return self.session.run([f"{t}_logits" for t in self.tasks], feeds)

    def probs(self, texts: Sequence[str], batch_size: int = 64) -> dict[str, np.ndarray]:
        """Texts must already be normalised; batches are formed by length so padding stays small."""
        ids = [e.ids for e in self.tokenizer.encode_batch(list(texts))]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out: dict[str, np.ndarray] = {}
        for start in range(0, len(order), batch_size):
            sel = order[start : start + batch_size]
            for task, logits in zip(self.tasks, self._run([ids[i] for i in sel]), strict=True):
                if task not in out:
                    out[task] = np.zeros((len(ids), logits.shape[1]), dtype=np.float32)
                out[task][sel] = softmax(logits.astype(np.float32))
        return out
