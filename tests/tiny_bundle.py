"""Build a tiny but real ONNX bundle without torch, for fast tests.

Embedding lookup -> masked mean -> one linear layer per task. Words in
NEGATIVE_WORDS push the sentiment head to "negative", POSITIVE_WORDS to
"positive", so tests can predict what the model will say.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from monitor.model.bundle import SENTIMENT_LABELS, write_manifest

NEGATIVE_WORDS = ["plunge", "fraud", "loss", "crash", "lawsuit", "bankrupt", "miss", "cut", "fall", "scandal"]
POSITIVE_WORDS = ["surge", "record", "beat", "profit", "growth", "upgrade", "rally", "gain", "win", "strong"]
TOPICS = ["Earnings", "Legal | Regulation", "Markets"]


def _tokenizer(max_length: int) -> Tokenizer:
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3}
    for w in [*NEGATIVE_WORDS, *POSITIVE_WORDS, "earnings", "court", "market", "the", "company", "shares"]:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.enable_truncation(max_length)
    return tok


def _graph(vocab: dict[str, int], tasks: dict[str, list[str]], bias: float) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    dim = 8
    emb = rng.normal(0, 0.01, (len(vocab), dim)).astype(np.float32)
    for w in NEGATIVE_WORDS:
        emb[vocab[w], 0] = 3.0
    for w in POSITIVE_WORDS:
        emb[vocab[w], 1] = 3.0
    emb[vocab["court"], 2] = 3.0
    emb[vocab["market"], 3] = 3.0
    inits = [numpy_helper.from_array(emb, "emb")]
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["h"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["h", "mask3"], ["hm"]),
        helper.make_node("ReduceSum", ["hm", "axis1"], ["s"], keepdims=0),
        helper.make_node("ReduceSum", ["maskf", "axis1"], ["n"], keepdims=1),
        helper.make_node("Max", ["n", "one"], ["n1"]),
        helper.make_node("Div", ["s", "n1"], ["pooled"]),
    ]
    inits += [
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array([1.0], dtype=np.float32), "one"),
    ]
    outputs = []
    for name, labels in tasks.items():
        w = np.zeros((dim, len(labels)), dtype=np.float32)
        b = np.zeros((len(labels),), dtype=np.float32)
        if name == "sentiment":
            w[0, 0], w[1, 2], b[1] = 4.0, 4.0, 0.5 + bias
        else:
            w[2, 1 % len(labels)], w[3, 2 % len(labels)], b[0] = 4.0, 4.0, 0.5
        inits += [numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(b, f"{name}_b")]
        nodes += [
            helper.make_node("MatMul", ["pooled", f"{name}_w"], [f"{name}_mm"]),
            helper.make_node("Add", [f"{name}_mm", f"{name}_b"], [f"{name}_logits"]),
        ]
        outputs.append(helper.make_tensor_value_info(f"{name}_logits", TensorProto.FLOAT, ["batch", len(labels)]))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        outputs,
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def make_bundle(
    directory: Path,
    *,
    version: str = "1",
    tasks: tuple[str, ...] = ("topic", "sentiment"),
    max_length: int = 32,
    bias: float = 0.0,
    variant_file: str = "model.int8.onnx",
    languages: tuple[str, ...] | None = None,
) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(max_length)
    tok.save(str(directory / "tokenizer.json"))
    spec = {t: (list(SENTIMENT_LABELS) if t == "sentiment" else list(TOPICS)) for t in tasks}
    vocab = json.loads((directory / "tokenizer.json").read_text())["model"]["vocab"]
    onnx.save(_graph(vocab, spec, bias), str(directory / variant_file))
    write_manifest(
        directory,
        {
            "name": "tiny-test",
            "version": version,
            "created": "2026-11-22T00:00:00Z",
            "backbone": "none (test graph)",
            "tasks": {t: {"labels": labels, "output": f"{t}_logits"} for t, labels in spec.items()},
            "max_length": max_length,
            "tokenizer": "tokenizer.json",
            "metrics": {},
            **({"languages": list(languages)} if languages else {}),
        },
    )
    return directory
