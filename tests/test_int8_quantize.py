"""INT8 quantisation on small hand-built ONNX graphs: SmoothQuant surgery before dynamic INT8 (an outlier
channel), and the arithmetic of weight-only INT8 kernels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("torch")  # training.export imports torch

from training.export import quantize_int8, smooth_activations

pytestmark = pytest.mark.train

RNG = np.random.default_rng(0)
W1 = RNG.normal(0, 0.1, (16, 8)).astype(np.float32)
W2 = RNG.normal(0, 0.1, (16, 4)).astype(np.float32)
W3 = RNG.normal(0, 0.1, (8, 3)).astype(np.float32)


def _graph() -> onnx.ModelProto:
    """x feeds two MatMuls (one group), their outputs meet in an Add, the Relu of one feeds a third MatMul."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"], name="mm1"),
        helper.make_node("MatMul", ["x", "w2"], ["h2"], name="mm2"),
        helper.make_node("Relu", ["h1"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w3"], ["y"], name="mm3"),
        helper.make_node("Add", ["x", "x"], ["skip"], name="residual"),  # x also used unscaled
    ]
    g = helper.make_graph(
        nodes, "toy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 16])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "h2", "skip")],
        [numpy_helper.from_array(w, n) for w, n in ((W1, "w1"), (W2, "w2"), (W3, "w3"))],
    )  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _x(n: int) -> np.ndarray:
    x = RNG.normal(0, 1, (n, 16)).astype(np.float32)
    x[:, 3] *= 40.0  # one outlier channel, as after BERT's layer norms
    return x


def _run(model: onnx.ModelProto | Path, x: np.ndarray) -> list[np.ndarray]:
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, {"x": x})


def test_smoothing_is_exact_in_fp32_and_flattens_the_quantised_input() -> None:
    model = _graph()
    x = _x(64)
    before = _run(model, x)
    n = smooth_activations(model, [{"x": _x(32)} for _ in range(4)], alpha=0.75)
    assert n == 2  # x (shared by mm1 and mm2) and relu's output
    assert sum(node.op_type == "Mul" for node in model.graph.node) == 2
    after = _run(model, x)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # What mm1 now sees: per-channel ranges much closer together than x's.
    mul = next(node for node in model.graph.node if node.op_type == "Mul" and node.input[0] == "x")
    inv = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == mul.input[1]))
    ratio = lambda a: float(np.abs(a).max(0).max() / np.median(np.abs(a).max(0)))  # noqa: E731
    assert ratio(x * inv) < ratio(x) / 4
    # The residual still reads the unscaled x.
    assert next(node for node in model.graph.node if node.name == "residual").input[0] == "x"


def test_dynamic_smooth_beats_plain_dynamic_int8_on_an_outlier_channel(tmp_path: Path) -> None:
    src = tmp_path / "toy.onnx"
    onnx.save(_graph(), str(src))
    x = _x(256)
    ref = _run(onnx.load(str(src)), x)[0]
    plain = quantize_int8(src, tmp_path / "dyn.onnx", "dynamic")
    smooth = quantize_int8(src, tmp_path / "smooth.onnx", "dynamic-smooth", calibration=[{"x": _x(64)}],
                           fp32_matmuls="")  # fmt: skip
    assert not (tmp_path / "smooth.smoothed.onnx").exists()
    err_plain = float(np.abs(_run(plain, x)[0] - ref).mean())
    err_smooth = float(np.abs(_run(smooth, x)[0] - ref).mean())
    print(err_smooth, err_plain)
    assert err_smooth < err_plain / 2, (err_smooth, err_plain)
    ops = {n.op_type for n in onnx.load(str(smooth)).graph.node}
    assert "MatMul" not in ops and ({"MatMulInteger", "DynamicQuantizeMatMul"} & ops or "DynamicQuantizeLinear" in ops)


def test_dynamic_smooth_needs_calibration(tmp_path: Path) -> None:
    src = tmp_path / "toy.onnx"
    onnx.save(_graph(), str(src))
    with pytest.raises(ValueError, match="calibration"):
        quantize_int8(src, tmp_path / "q.onnx", "dynamic-smooth")


def test_dynamic_smooth_keeps_named_matmuls_in_fp32_and_refuses_a_pattern_matching_none(tmp_path: Path) -> None:
    src = tmp_path / "toy.onnx"
    onnx.save(_graph(), str(src))
    calib = [{"x": _x(64)}]
    q = quantize_int8(src, tmp_path / "q.onnx", "dynamic-smooth", calibration=calib, fp32_matmuls="^mm3$")
    matmuls = [n for n in onnx.load(str(q)).graph.node if n.op_type == "MatMul"]
    assert [n.name for n in matmuls] == ["mm3"]
    with pytest.raises(ValueError, match="no MatMul name matches"):
        quantize_int8(src, tmp_path / "q2.onnx", "dynamic-smooth", calibration=calib)  # BERT's pattern: no match


def _wide_graph() -> onnx.ModelProto:
    """One MatMul whose K (64) holds whole blocks of 32, as every linear layer of the served encoders does."""
    w = RNG.normal(0, 0.1, (64, 24)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")],
    )  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_weight_only_int8_compute_sets_the_kernels_arithmetic_and_stays_close(tmp_path: Path) -> None:
    src = tmp_path / "wide.onnx"
    onnx.save(_wide_graph(), str(src))
    x = RNG.normal(0, 1, (16, 64)).astype(np.float32)
    ref = _run(onnx.load(str(src)), x)[0]
    levels, errors = {}, {}
    for compute in ("fp32", "int8"):
        q = quantize_int8(src, tmp_path / f"{compute}.onnx", "weight-only", compute=compute)
        (node,) = [n for n in onnx.load(str(q)).graph.node if n.op_type == "MatMulNBits"]
        levels[compute] = {a.name: a.i for a in node.attribute}.get("accuracy_level", 0)
        errors[compute] = float(np.abs(_run(q, x)[0] - ref).max() / np.abs(ref).max())
    assert levels == {"fp32": 0, "int8": 4}
    # 8-bit activations per block of 32 add error on top of the 8-bit weights', but little.
    assert errors["fp32"] < errors["int8"] < 0.03, errors
    with pytest.raises(ValueError, match="unknown INT8 compute"):
        quantize_int8(src, tmp_path / "bad.onnx", "weight-only", compute="int4")
