"""Score texts with an exported ONNX model exactly as the worker does.

Evaluation, the parity check and `predict` all go through the worker's own
classifier (monitor/model/session.py: the saved tokenizer file, its
truncation and padding, the ONNX graph, softmax), so the numbers in a
report describe the artefacts the worker serves, not the torch model they
came from. Before a bundle's manifest exists the graph's outputs are named
`<task>_logits`, as the exporter writes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from monitor.model.bundle import Bundle
from monitor.model.session import Classifier


class OnnxRunner:
    """One ONNX file + one tokenizer file; `probs` returns softmax outputs per task, in input order."""

    def __init__(self, model_file: Path, tokenizer_file: Path, tasks: Sequence[str], max_length: int,
                 threads: int = 2) -> None:  # fmt: skip
        self.tasks = list(tasks)
        self.max_length = max_length
        outputs = {t: f"{t}_logits" for t in self.tasks}
        self.classifier = Classifier(model_file, tokenizer_file, outputs, max_length, intra_op_threads=threads)

    @classmethod
    def from_bundle(cls, bundle: Bundle, threads: int = 2) -> OnnxRunner:
        return cls(bundle.model_file, bundle.tokenizer_file, list(bundle.tasks), bundle.max_length, threads)

    def probs(self, texts: Sequence[str], batch_size: int = 64) -> dict[str, np.ndarray]:
        """Texts must already be normalised; batches are formed by length so padding stays small."""
        c = self.classifier
        return c.run_bucketed(c.encode(texts), batch_size)
