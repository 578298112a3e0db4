"""Export to ONNX, optimise, quantise to INT8, and check parity with torch.

Export first, then verify (as optimum does): the same texts go through
torch, onnxruntime fp32 and onnxruntime INT8; the export fails if argmax
agreement or the largest probability difference is outside the bounds,
for any task in any language of the run (a pooled score would let the
larger English share hide a Chinese regression).
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.int8_choices import INT8_COMPUTE, INT8_METHODS
from training.model import MultiTaskModel, encode
from training.onnx_runner import OnnxRunner

log = logging.getLogger(__name__)


class ParityError(RuntimeError):
    """The exported model does not reproduce the source model within the bounds."""


@dataclass(frozen=True)
class ParityBounds:
    fp32_min_agreement: float = 0.999
    fp32_max_prob_diff: float = 1e-3
    int8_min_agreement: float = 0.99  # the bar for INT8 vs fp32/torch argmax agreement
    int8_max_prob_diff: float = 0.25


def export_onnx(model: MultiTaskModel, tokenizer: Any, path: Path, max_length: int, opset: int = 17) -> Path:
    """Legacy (TorchScript) exporter: the dynamo exporter ignores the opset and breaks quantisation."""
    model.eval()
    enc = encode(tokenizer, ["a short text", "a somewhat longer example sentence for tracing"], max_length)
    names = [f"{t}_logits" for t in model.task_names]
    dyn = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}
    dyn.update({n: {0: "batch"} for n in names})
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # Tracer warnings about Python-side shape checks in transformers' attention code: the graph is
        # verified numerically by the parity check instead.
        warnings.simplefilter("ignore")
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


SMOOTH_ALPHA = 0.75  # lower values hurt agreement or broke the model (training/README.md, dynamic-smooth)
# MatMuls that dynamic-smooth leaves in fp32: BERT's FFN down-projections (transformers' module path
# `encoder.layer.N.output.dense`). Their input, the GELU output, is the hardest to quantise per tensor:
# with them in fp32 the shipped checkpoint passes the 99 % parity gate it failed without (training/README.md).
FP32_MATMULS = r"layer\.\d+/output/dense/MatMul"


def calibration_feeds(
    tokenizer: Any, texts: Sequence[str], max_length: int, batch: int = 32
) -> list[dict[str, np.ndarray]]:
    """Batches as the worker builds them (dynamic padding), for reading activation ranges."""
    return [{k: v.numpy() for k, v in encode(tokenizer, texts[i : i + batch], max_length).items()}
            for i in range(0, len(texts), batch)]  # fmt: skip


def smooth_activations(model: Any, feeds: Sequence[dict[str, np.ndarray]], alpha: float = SMOOTH_ALPHA) -> int:
    """SmoothQuant (Xiao et al., 2023): move activation outliers into the weights before dynamic INT8.

    Dynamic INT8 quantises each activation tensor with one scale per batch, so a few channels
    10-15x larger than the median (measured after MiniLM's layer norms and GELU) leave the rest a
    handful of levels. Each weight MatMul's input is divided per channel by s = max|X|^alpha /
    max|W|^(1-alpha) and the weight's rows multiplied by s: exact in fp32, flatter for the quantiser.
    The division is an explicit Mul: in a post-LN BERT the layer-norm output also feeds the residual,
    so it cannot be folded there. Returns the number of MatMul inputs smoothed.
    """
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    groups: dict[str, list[Any]] = {}
    for n in graph.node:
        if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2:
            groups.setdefault(n.input[0], []).append(n)
    weight_users: dict[str, set[str]] = {}
    for x, nodes in groups.items():
        for n in nodes:
            weight_users.setdefault(n.input[1], set()).add(x)
    # A weight shared by MatMuls on different inputs cannot take two different row scales.
    groups = {x: ns for x, ns in groups.items() if all(len(weight_users[n.input[1]]) == 1 for n in ns)}
    if not groups or not feeds:
        return 0
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, None) for x in groups)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor name
    sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = list(groups)
    amax: dict[str, np.ndarray] = {}
    for f in feeds:
        for x, v in zip(names, sess.run(names, f), strict=True):
            a = np.abs(v.reshape(-1, v.shape[-1])).max(axis=0)
            amax[x] = np.maximum(amax[x], a) if x in amax else a
    order = {id(n): i for i, n in enumerate(graph.node)}
    muls = []
    for k, (x, nodes) in enumerate(groups.items()):
        ws = [numpy_helper.to_array(inits[n.input[1]]) for n in nodes]
        wmax = np.max([np.abs(w).max(axis=1) for w in ws], axis=0)
        s = (np.maximum(amax[x], 1e-5) ** alpha / np.maximum(wmax, 1e-5) ** (1 - alpha)).clip(1e-3, 1e3)
        s = s.astype(np.float32)
        inv = numpy_helper.from_array((1.0 / s).astype(np.float32), f"smooth_{k}_inv_scale")
        graph.initializer.append(inv)
        out = f"{x}_smoothed_{k}"
        first = min(nodes, key=lambda n: order[id(n)])
        muls.append((order[id(first)], helper.make_node("Mul", [x, inv.name], [out], name=f"smooth_{k}")))
        for n, w in zip(nodes, ws, strict=True):
            inits[n.input[1]].CopyFrom(numpy_helper.from_array((w * s[:, None]).astype(np.float32), n.input[1]))
            n.input[0] = out
    for at, mul in sorted(muls, key=lambda t: t[0], reverse=True):
        graph.node.insert(at, mul)
    return len(muls)


def quantize_embeddings_per_row(model: Any, min_rows: int = 1024) -> int:
    """Store large embedding tables as int8 with one scale per row; returns the number of tables changed.

    The table is read with two Gathers (int8 rows and their scales) and one Mul, so only the rows a
    batch uses are dequantised. Per-row scales keep a rare token with large weights from coarsening
    every other row, which a per-tensor scale does (it lowered argmax agreement measurably).
    """
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    changed = 0
    for node in list(graph.node):
        if node.op_type != "Gather" or node.input[0] not in inits:
            continue
        table = numpy_helper.to_array(inits[node.input[0]])
        if table.ndim != 2 or table.shape[0] < min_rows or table.dtype != np.float32:
            continue
        scale = np.maximum(np.abs(table).max(axis=1, keepdims=True), 1e-12) / 127.0
        q = np.clip(np.rint(table / scale), -127, 127).astype(np.int8)
        base = node.input[0]
        graph.initializer.remove(inits[base])
        graph.initializer.extend([numpy_helper.from_array(q, base + "_int8"),
                                  numpy_helper.from_array(scale.astype(np.float32), base + "_scale")])  # fmt: skip
        ids, out = node.input[1], node.output[0]
        at = list(graph.node).index(node)
        graph.node.remove(node)
        new = [
            helper.make_node("Gather", [base + "_int8", ids], [out + "_q"], name=node.name + "_q", axis=0),
            helper.make_node("Cast", [out + "_q"], [out + "_f"], name=node.name + "_cast", to=onnx.TensorProto.FLOAT),
            helper.make_node("Gather", [base + "_scale", ids], [out + "_s"], name=node.name + "_scale", axis=0),
            helper.make_node("Mul", [out + "_f", out + "_s"], [out], name=node.name + "_dequant"),
        ]
        for k, n in enumerate(new):
            graph.node.insert(at + k, n)
        changed += 1
    return changed


@contextmanager
def _quiet_quantiser() -> Iterator[None]:
    """onnxruntime's quantisers log every node and tensor at INFO."""
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def quantize_int8(src: Path, dst: Path, method: str = "weight-only", block_size: int = 32,
                  calibration: Sequence[dict[str, np.ndarray]] | None = None,
                  fp32_matmuls: str = FP32_MATMULS, compute: str = "fp32") -> Path:  # fmt: skip
    """INT8 weights; three methods, chosen by measured agreement with fp32 and speed (bench/README.md).

    "dynamic": ORT dynamic quantisation, per-channel QInt8; activations are quantised to
    8 bits per tensor at run time too, which flipped too many argmaxes for the 99% bar.
    "weight-only" (default): every linear layer becomes MatMulNBits with 8-bit symmetric weights in
    blocks of `block_size` and fp32 activations; the word-embedding table is int8 with a scale per
    row. About a quarter of the fp32 size, near-perfect agreement. `compute` picks the kernel's
    arithmetic (MatMulNBits `accuracy_level`): "fp32" unpacks the 8-bit weights on every call, which at
    batch 1 costs several times the fp32 graph; "int8" quantises each block of 32 activations to 8
    bits and multiplies in integers (VNNI/AMX), the same weights at a fraction of the cost.
    "dynamic-smooth": `smooth_activations` on `calibration` batches, then dynamic INT8 of the weight
    MatMuls except those whose name matches `fp32_matmuls` ("" quantises all), embeddings int8 per
    row (a per-tensor embedding scale cost topic agreement). Figures and speeds: training/README.md, "INT8".
    """
    import onnx

    if method == "dynamic-smooth":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        if not calibration:
            raise ValueError("INT8 method 'dynamic-smooth' needs calibration batches")
        model = onnx.load(str(src))
        keep = [n.name for n in model.graph.node if n.op_type == "MatMul" and fp32_matmuls
                and re.search(fp32_matmuls, n.name)]  # fmt: skip
        if fp32_matmuls and not keep:
            raise ValueError(f"no MatMul name matches the fp32 pattern '{fp32_matmuls}' (pass '' to quantise all)")
        smooth_activations(model, calibration)
        smoothed = dst.with_name(dst.stem + ".smoothed.onnx")
        onnx.save(model, str(smoothed))
        try:
            with _quiet_quantiser():
                quantize_dynamic(str(smoothed), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                                 op_types_to_quantize=["MatMul"], nodes_to_exclude=keep)  # fmt: skip
        finally:
            smoothed.unlink(missing_ok=True)
        q = onnx.load(str(dst))
        quantize_embeddings_per_row(q)
        onnx.save(q, str(dst))
        return dst
    if method == "dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with _quiet_quantiser():
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)
        return dst
    if method != "weight-only":
        raise ValueError(f"unknown INT8 method '{method}' (choose {', '.join(INT8_METHODS)})")
    if compute not in INT8_COMPUTE:
        raise ValueError(f"unknown INT8 compute '{compute}' (choose {', '.join(INT8_COMPUTE)})")
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    with _quiet_quantiser():
        q = MatMulNBitsQuantizer(onnx.load(str(src)), bits=8, block_size=block_size, is_symmetric=True,
                                 accuracy_level=INT8_COMPUTE[compute] or None)  # fmt: skip
        q.process()
    model = q.model.model
    quantize_embeddings_per_row(model)
    onnx.save(model, str(dst))
    return dst


def ort_probs(model_file: Path, tokenizer_file: Path, texts: list[str], max_length: int,
              tasks: list[str]) -> dict[str, np.ndarray]:  # fmt: skip
    """Through the saved tokenizer file and onnxruntime, exactly as the worker runs the bundle."""
    return OnnxRunner(model_file, tokenizer_file, tasks, max_length).probs(texts)


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


def compare_by_language(a: dict[str, np.ndarray], b: dict[str, np.ndarray],
                        langs: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:  # fmt: skip
    """`compare` on each language's texts alone: {lang: {task: report}}, with the text count."""
    tags = np.asarray(langs)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for lang in sorted(set(langs)):
        sel = tags == lang
        out[lang] = {t: {**r, "texts": int(sel.sum())}
                     for t, r in compare({t: v[sel] for t, v in a.items()}, {t: v[sel] for t, v in b.items()}).items()}  # fmt: skip
    return out


def check_parity_by_language(report: dict[str, dict[str, dict[str, float]]], min_agree: float, max_diff: float,
                             what: str, hint: str = "") -> None:  # fmt: skip
    """Every task x language within the bounds, else one ParityError line naming all that are not."""
    bad = [
        f"{task}/{lang} agreement {r['argmax_agreement']:.4f} max prob diff {r['max_prob_diff']:.3g}"
        for lang, tasks in report.items()
        for task, r in tasks.items()
        if r["argmax_agreement"] < min_agree or r["max_prob_diff"] > max_diff
    ]
    if bad:
        raise ParityError(f"{what} parity failed for {'; '.join(bad)} (bounds: agreement >= {min_agree}, "
                          f"max prob diff <= {max_diff}){'; ' + hint if hint else ''}")  # fmt: skip
