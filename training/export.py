"""Export to ONNX, optimise, quantise to INT8, and check parity with torch.

Export first, then verify (as optimum does): the same texts go through
torch, onnxruntime fp32 and onnxruntime INT8; the export fails if argmax
agreement or the largest probability difference is outside the bounds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.model import MultiTaskModel, encode

log = logging.getLogger(__name__)


class ParityError(RuntimeError):
    """The exported model does not reproduce the source model within the bounds."""


@dataclass(frozen=True)
class ParityBounds:
    fp32_min_agreement: float = 0.999
    fp32_max_prob_diff: float = 1e-3
    int8_min_agreement: float = 0.97
    int8_max_prob_diff: float = 0.5


def export_onnx(model: MultiTaskModel, tokenizer: Any, path: Path, max_length: int, opset: int = 17) -> Path:
    """Legacy (TorchScript) exporter: the dynamo exporter ignores the opset and breaks quantisation (FACTS.md)."""
    model.eval()
    enc = encode(tokenizer, ["a short text", "a somewhat longer example sentence for tracing"], max_length)
    names = [f"{t}_logits" for t in model.task_names]
    dyn = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}
    dyn.update({n: {0: "batch"} for n in names})
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (enc["input_ids"], enc["attention_mask"]),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=names,
            dynamic_axes=dyn,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return path


def optimize_onnx(src: Path, dst: Path, num_heads: int, hidden: int) -> Path:
    """Transformer graph fusions (attention, layer norm, GELU) that run on every execution provider."""
    from onnxruntime.transformers.optimizer import optimize_model

    opt = optimize_model(str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden, opt_level=1)
    opt.save_model_to_file(str(dst))
    return dst


def quantize_int8(src: Path, dst: Path) -> Path:
    """Dynamic INT8, per-channel weights (FACTS.md: 97-99% agreement vs 95% per-tensor)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)
    return dst


def ort_probs(path: Path, tokenizer: Any, texts: list[str], max_length: int, tasks: list[str]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    from monitor.scorer import softmax

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out: dict[str, list[np.ndarray]] = {t: [] for t in tasks}
    for i in range(0, len(texts), 64):
        enc = encode(tokenizer, texts[i : i + 64], max_length)
        feeds = {k: v.numpy().astype(np.int64) for k, v in enc.items()}
        res = sess.run([f"{t}_logits" for t in tasks], feeds)
        for t, r in zip(tasks, res, strict=True):
            out[t].append(softmax(r))
    return {t: np.concatenate(v) for t, v in out.items()}


@torch.no_grad()
def torch_probs(model: MultiTaskModel, tokenizer: Any, texts: list[str], max_length: int) -> dict[str, np.ndarray]:
    model.eval()
    out: dict[str, list[np.ndarray]] = {t: [] for t in model.task_names}
    for i in range(0, len(texts), 64):
        logits = model(**encode(tokenizer, texts[i : i + 64], max_length))
        for t, lg in zip(model.task_names, logits, strict=True):
            out[t].append(torch.softmax(lg, -1).numpy())
    return {t: np.concatenate(v) for t, v in out.items()}


def compare(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    return {
        t: {
            "argmax_agreement": round(float((a[t].argmax(1) == b[t].argmax(1)).mean()), 5),
            "max_prob_diff": round(float(np.abs(a[t] - b[t]).max()), 6),
            "mean_prob_diff": round(float(np.abs(a[t] - b[t]).mean()), 6),
        }
        for t in a
    }


def check_parity(report: dict[str, dict[str, float]], min_agree: float, max_diff: float, what: str) -> None:
    for task, r in report.items():
        if r["argmax_agreement"] < min_agree or r["max_prob_diff"] > max_diff:
            raise ParityError(
                f"{what} parity failed for {task}: agreement {r['argmax_agreement']:.4f} (min {min_agree}), "
                f"max prob diff {r['max_prob_diff']:.4g} (max {max_diff})"
            )
