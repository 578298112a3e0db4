"""From a training run to a verified bundle: export, optimise, quantise, parity, evaluate, manifest."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from monitor.bundle import write_manifest
from training.data import TASK_LABELS, Examples
from training.evaluate import evaluate_bundle, write_report
from training.export import (
    ParityBounds,
    check_parity,
    compare,
    export_onnx,
    optimize_onnx,
    ort_probs,
    quantize_int8,
    torch_probs,
)
from training.train import load_trained


def export_bundle(
    run_dir: Path,
    out: Path,
    eval_sets: dict[str, Examples],
    *,
    name: str = "finsent-minilm-l6",
    version: str | None = None,
    keep_fp32: bool = True,
    bounds: ParityBounds | None = None,
    parity_limit: int = 1000,
) -> dict[str, Any]:
    bounds = bounds or ParityBounds()
    model, tokenizer, meta = load_trained(run_dir)
    cfg = meta["config"]
    max_length = int(cfg["max_length"])
    tasks = list(model.task_names)
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        if old.is_file():
            old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        raw = export_onnx(model, tokenizer, Path(tmp) / "raw.onnx", max_length)
        enc_cfg = model.encoder.config
        fp32 = optimize_onnx(raw, out / "model.onnx", int(enc_cfg.num_attention_heads), int(enc_cfg.hidden_size))
        # Quantise the plain export: the fused graph defeats the quantiser's shape inference.
        # onnxruntime applies the same fusions to the INT8 graph when it loads it.
        int8 = quantize_int8(raw, out / "model.int8.onnx")
    texts = [t for ex in eval_sets.values() for t in ex.texts[:parity_limit]][: parity_limit * 2]
    ref = torch_probs(model, tokenizer, texts, max_length)
    p32 = ort_probs(fp32, tokenizer, texts, max_length, tasks)
    p8 = ort_probs(int8, tokenizer, texts, max_length, tasks)
    parity = {"texts": len(texts), "torch_vs_fp32": compare(ref, p32), "torch_vs_int8": compare(ref, p8),
              "fp32_vs_int8": compare(p32, p8)}  # fmt: skip
    check_parity(parity["torch_vs_fp32"], bounds.fp32_min_agreement, bounds.fp32_max_prob_diff, "ONNX fp32")
    check_parity(parity["torch_vs_int8"], bounds.int8_min_agreement, bounds.int8_max_prob_diff, "ONNX INT8")
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        shutil.copy(Path(tmp) / "tokenizer.json", out / "tokenizer.json")
    manifest: dict[str, Any] = {
        "name": name,
        "version": version or datetime.now(UTC).strftime("%Y.%m.%d.%H%M"),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "backbone": cfg["backbone"],
        "tasks": {t: {"labels": list(TASK_LABELS[t]), "output": f"{t}_logits"} for t in tasks},
        "max_length": max_length,
        "tokenizer": "tokenizer.json",
        "training": {k: cfg[k] for k in ("epochs", "batch_size", "lr", "seed", "max_length")}
        | {"steps": meta["steps"], "seconds": meta["seconds"], "best_mean_macro_f1": meta["best_mean_macro_f1"]},
        "data_fingerprint": meta["data"],
        "parity": parity,
    }
    write_manifest(out, manifest)
    res32 = evaluate_bundle(out, eval_sets, "fp32")
    res8 = evaluate_bundle(out, eval_sets, "int8")
    loss = {k: {"accuracy": round(res32[k]["accuracy"] - res8[k]["accuracy"], 4),
                "macro_f1": round(res32[k]["macro_f1"] - res8[k]["macro_f1"], 4)} for k in res8}  # fmt: skip
    manifest["metrics"] = {
        "int8": {k: {m: v[m] for m in ("n", "accuracy", "macro_f1", "ece")} for k, v in res8.items()},
        "fp32": {k: {m: v[m] for m in ("n", "accuracy", "macro_f1", "ece")} for k, v in res32.items()},
        "int8_loss_vs_fp32": loss,
    }
    write_report(res8, out, extra={"parity": parity, "fp32": manifest["metrics"]["fp32"], "int8_loss_vs_fp32": loss})
    if not keep_fp32:
        (out / "model.onnx").unlink()
    manifest["export_seconds"] = round(time.monotonic() - started, 1)
    write_manifest(out, manifest)
    return json.loads((out / "manifest.json").read_text())
