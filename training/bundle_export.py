"""From a training run to a verified bundle: export, optimise, quantise, parity, evaluate, manifest.

The bundle is assembled in a staging directory next to the target and
moved into place only after every check passed, so a failed export never
leaves a half-written bundle where the worker (or git) would pick it up.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from monitor.bundle import write_manifest
from training.data import TASK_LABELS, Examples
from training.evaluate import bundle_probs, reports, write_report
from training.export import (
    FP32_MATMULS,
    ParityBounds,
    ParityError,
    calibration_feeds,
    check_parity,
    compare,
    export_onnx,
    optimize_onnx,
    ort_probs,
    quantize_int8,
    torch_probs,
)
from training.train import load_trained

SUMMARY_KEYS = ("n", "accuracy", "macro_f1", "ece")


def parity_texts(sets: dict[str, Examples], limit: int, seed: int = 0) -> list[str]:
    """A seeded sample from every set: files are often sorted by label, so the head alone would be one class."""
    rng = random.Random(seed)
    texts: list[str] = []
    for ex in sets.values():
        texts += rng.sample(ex.texts, min(limit, len(ex.texts)))
    return texts


def calibration_texts(sets: dict[str, Examples], exclude: Sequence[str], limit: int = 256, seed: int = 1) -> list[str]:
    """Texts whose activation ranges calibrate smoothed INT8: labels are never read, and none of
    them is a parity text, so the parity check still measures the quantised model on unseen text."""
    rng = random.Random(seed)
    skip = set(exclude)
    texts: list[str] = []
    for ex in sets.values():
        pool = [t for t in ex.texts if t not in skip]
        texts += rng.sample(pool, min(limit, len(pool)))
    return texts


def int8_vs_fp32(sets: dict[str, Examples], p32: dict[str, np.ndarray], p8: dict[str, np.ndarray]) -> dict[str, Any]:
    """Agreement and accuracy loss of the served INT8 model against fp32 ONNX, per evaluation set."""
    out: dict[str, Any] = {}
    for name in p8:
        y = np.asarray(sets[name].labels)
        a32, a8 = p32[name].argmax(1), p8[name].argmax(1)
        out[name] = {
            "argmax_agreement": round(float((a32 == a8).mean()), 5),
            "max_prob_diff": round(float(np.abs(p32[name] - p8[name]).max()), 6),
            "accuracy_loss": round(float((a32 == y).mean() - (a8 == y).mean()), 5),
        }
    return out


def _save_tokenizer(tokenizer: Any, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        shutil.copy(Path(tmp) / "tokenizer.json", out / "tokenizer.json")


def export_bundle(
    run_dir: Path,
    out: Path,
    eval_sets: dict[str, Examples],
    *,
    name: str = "finsent-minilm-l6",
    version: str | None = None,
    keep_fp32: bool = True,
    bounds: ParityBounds | None = None,
    parity_limit: int = 700,
    int8_method: str = "dynamic-smooth",
    fp32_matmuls: str | None = None,
) -> dict[str, Any]:
    """Write a bundle for the run's best checkpoint; raises ParityError when an ONNX variant drifts."""
    bounds = bounds or ParityBounds()
    fp32_matmuls = FP32_MATMULS if fp32_matmuls is None else fp32_matmuls
    model, tokenizer, meta = load_trained(run_dir)
    cfg = meta["config"]
    max_length = int(cfg["max_length"])
    tasks = list(model.task_names)
    started = time.monotonic()
    out = out.resolve()
    stage = out.with_name(out.name + ".staging")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    _save_tokenizer(tokenizer, stage)
    with tempfile.TemporaryDirectory() as tmp:
        raw = export_onnx(model, tokenizer, Path(tmp) / "raw.onnx", max_length)
        enc_cfg = model.encoder.config
        fp32 = optimize_onnx(raw, stage / "model.onnx", int(enc_cfg.num_attention_heads), int(enc_cfg.hidden_size))
        texts = parity_texts(eval_sets, parity_limit)
        calib, calib_info = None, None
        if int8_method == "dynamic-smooth":
            held_out = calibration_texts(eval_sets, texts)
            # Small evaluation sets (smoke runs) may all go to parity: calibrate on those, and say so.
            calib_texts = held_out if len(held_out) >= 32 else texts
            calib = calibration_feeds(tokenizer, calib_texts, max_length)
            calib_info = {"texts": len(calib_texts), "disjoint_from_parity": calib_texts is held_out,
                          "fp32_matmuls": fp32_matmuls}  # fmt: skip
        # Quantise the plain export: the fused graph defeats the quantiser's shape inference.
        # onnxruntime applies the same fusions to the INT8 graph when it loads it.
        int8 = quantize_int8(raw, stage / "model.int8.onnx", int8_method, calibration=calib, fp32_matmuls=fp32_matmuls)
    tok_file = stage / "tokenizer.json"
    ref = torch_probs(model, tokenizer, texts, max_length)
    p32 = ort_probs(fp32, tok_file, texts, max_length, tasks)
    p8 = ort_probs(int8, tok_file, texts, max_length, tasks)
    parity = {"texts": len(texts), "bounds": bounds.__dict__, "torch_vs_fp32": compare(ref, p32),
              "torch_vs_int8": compare(ref, p8), "fp32_vs_int8": compare(p32, p8)}  # fmt: skip
    check_parity(parity["torch_vs_fp32"], bounds.fp32_min_agreement, bounds.fp32_max_prob_diff, "ONNX fp32")
    check_parity(parity["torch_vs_int8"], bounds.int8_min_agreement, bounds.int8_max_prob_diff, "ONNX INT8")
    manifest: dict[str, Any] = {
        "name": name,
        "version": version or datetime.now(UTC).strftime("%Y.%m.%d.%H%M"),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "backbone": cfg["backbone"],
        "tasks": {t: {"labels": list(TASK_LABELS[t]), "output": f"{t}_logits"} for t in tasks},
        "max_length": max_length,
        "tokenizer": "tokenizer.json",
        "onnx": {"opset": 17, "inputs": ["input_ids", "attention_mask"], "int8": int8_method}
        | ({"int8_calibration": calib_info} if calib_info else {}),
        "training": {k: cfg[k] for k in ("epochs", "batch_size", "lr", "seed", "max_length", "eval_every", "patience")}
        | {
            "steps": meta["steps"],
            "seconds": meta["seconds"],
            "best_mean_macro_f1": meta["best_mean_macro_f1"],
            "history": meta.get("history", []),
        },  # fmt: skip
        "data_fingerprint": meta["data"],
        "parity": parity,
    }
    write_manifest(stage, manifest)
    probs32 = bundle_probs(stage, eval_sets, "fp32")
    probs8 = bundle_probs(stage, eval_sets, "int8")
    res32, res8 = reports(eval_sets, probs32, "fp32"), reports(eval_sets, probs8, "int8")
    agreement = int8_vs_fp32(eval_sets, probs32, probs8)
    manifest["metrics"] = {
        "served_variant": "int8",
        "int8": {k: {m: v[m] for m in SUMMARY_KEYS} for k, v in res8.items()},
        "fp32": {k: {m: v[m] for m in SUMMARY_KEYS} for k, v in res32.items()},
        "int8_vs_fp32": agreement,
    }
    extra = {"fp32": manifest["metrics"]["fp32"], "int8_vs_fp32": agreement, "parity": parity}
    write_report(res8, stage, extra=extra, title=f"{name} {manifest['version']} (INT8, as served)")
    worst = min((a["argmax_agreement"] for a in agreement.values()), default=1.0)
    if worst < bounds.int8_min_agreement:
        raise ParityError(f"INT8 vs fp32 argmax agreement {worst:.4f} on the evaluation sets is below "
                          f"{bounds.int8_min_agreement}")  # fmt: skip
    if not keep_fp32:
        (stage / "model.onnx").unlink()
    manifest["export_seconds"] = round(time.monotonic() - started, 1)
    write_manifest(stage, manifest)
    shutil.rmtree(out, ignore_errors=True)
    stage.rename(out)
    return json.loads((out / "manifest.json").read_text())
