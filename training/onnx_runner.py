"""Score texts with an exported ONNX model exactly as the worker does.

Evaluation, the parity check and `predict` all go through the worker's own
classifier (monitor/model/session.py: the saved tokenizer file, its
truncation and padding, the ONNX graph, softmax), so the numbers in a
report describe the artefacts the worker serves, not the torch model they
came from. Before a bundle's manifest exists the graph's outputs are named
`<task>_logits`, as the exporter writes them. A runner made from a bundle
applies the bundle's calibration (one temperature per task and language) as
the worker does; one made from bare files has none.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from monitor.core.language import detect_script, served_language
from monitor.core.scores import row_temperatures, softmax
from monitor.model.bundle import DEFAULT_LANGUAGES, Bundle
from monitor.model.session import Classifier


class OnnxRunner:
    """One ONNX file + one tokenizer file; `probs` returns softmax outputs per task, in input order."""

    def __init__(self, model_file: Path, tokenizer_file: Path, tasks: Sequence[str], max_length: int,
                 threads: int = 2, temperatures: dict[str, dict[str, float]] | None = None,
                 languages: Sequence[str] = DEFAULT_LANGUAGES) -> None:  # fmt: skip
        self.tasks = list(tasks)
        self.max_length = max_length
        self.temperatures = temperatures or {}
        self.languages = tuple(languages)
        outputs = {t: f"{t}_logits" for t in self.tasks}
        self.classifier = Classifier(model_file, tokenizer_file, outputs, max_length, intra_op_threads=threads)

    @classmethod
    def from_bundle(cls, bundle: Bundle, threads: int = 2) -> OnnxRunner:
        return cls(bundle.model_file, bundle.tokenizer_file, list(bundle.tasks), bundle.max_length, threads,
                   bundle.temperatures, bundle.languages)  # fmt: skip

    def logits(self, texts: Sequence[str], batch_size: int = 64) -> dict[str, np.ndarray]:
        """Texts must already be normalised; batches are formed by length so padding stays small."""
        c = self.classifier
        return c.run_bucketed(c.encode(texts), batch_size, raw=True)

    def probs(self, texts: Sequence[str], batch_size: int = 64,
              langs: Sequence[str] | None = None) -> dict[str, np.ndarray]:  # fmt: skip
        """Probabilities as the worker serves them: each text at its language's temperature.

        langs: one per text; None reads each text's script, as the worker does for an item without a tag.
        A language the bundle does not declare gets its first one's, as the worker's default route.
        """
        raw = self.logits(texts, batch_size)
        if not self.temperatures:
            return {t: softmax(v) for t, v in raw.items()}
        codes = list(langs) if langs else [detect_script(t) for t in texts]
        codes = [served_language(c, self.languages) for c in codes]
        return {task: softmax(v, row_temperatures(self.temperatures, task, codes)) for task, v in raw.items()}
