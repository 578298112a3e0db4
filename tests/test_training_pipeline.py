"""Train a few steps, export, quantise, check parity, load the bundle as the worker does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from monitor.bundle import load_bundle
from monitor.scorer import Scorer

pytestmark = [pytest.mark.slow, pytest.mark.train]


def _write_data(d: Path) -> dict[str, Path]:
    topics = ["Earnings", "Macro", "IPO"]
    sents = ["Bearish", "Bullish", "Neutral"]
    rows_t = [(f"company {w} report number {i}", topics[i % 3]) for i, w in enumerate(["alpha", "beta", "gamma"] * 20)]
    rows_s = [(f"stock {w} move {i}", sents[i % 3]) for i, w in enumerate(["up", "down", "flat"] * 20)]
    out = {}
    for name, rows in (("topic", rows_t), ("sentiment", rows_s)):
        p = d / f"{name}.csv"
        p.write_text("text,label\n" + "\n".join(f'"{t}",{y}' for t, y in rows) + "\n")
        out[name] = p
    return out


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "training.cli", *args], capture_output=True, text=True, timeout=600)


def test_train_export_quantise_parity_and_serve(tmp_path: Path) -> None:
    data = _write_data(tmp_path)
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    common = ["--topic-valid", str(data["topic"]), "--sentiment-valid", str(data["sentiment"])]
    r = _cli("train", "--random-init", "--max-steps", "8", "--out", str(run), "--topic-train", str(data["topic"]),
             "--sentiment-train", str(data["sentiment"]), *common)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    # A barely trained random model has near-uniform probabilities, so INT8 rounding flips argmaxes:
    # strict bounds must fail the export, loose ones (for this toy model only) pass.
    strict = ("--min-int8-agreement", "1.0", "--max-int8-prob-diff", "1e-7")
    r = _cli("export", str(run), "--out", str(bundle), "--news-eval", str(data["sentiment"]), *strict, *common)
    assert r.returncode == 2 and "parity failed" in r.stderr, r.stderr[-2000:]
    loose = ("--min-int8-agreement", "0.5")
    r = _cli("export", str(run), "--out", str(bundle), "--version", "t1", "--news-eval", str(data["sentiment"]),
             *loose, *common)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    manifest = json.loads((bundle / "manifest.json").read_text())
    for key in ("name", "version", "created", "backbone", "tasks", "max_length", "normalization_version", "files",
                "metrics", "data_fingerprint", "parity"):  # fmt: skip
        assert key in manifest
    assert manifest["parity"]["torch_vs_fp32"]["sentiment"]["argmax_agreement"] >= 0.999
    assert {"model.onnx", "model.int8.onnx", "tokenizer.json", "eval.md", "eval.json"} <= set(manifest["files"])
    assert (bundle / "confusion_tweets_topic_valid.png").stat().st_size > 1000
    for variant in ("fp32", "int8"):
        scorer = Scorer([load_bundle(bundle, variant)], providers="cpu")
        out = scorer.score(["stock down move", "company alpha report"])
        assert set(out[0]) == {"topic", "sentiment"}
    r = _cli("predict", str(bundle), "stock up move 3")
    assert r.returncode == 0 and json.loads(r.stdout.splitlines()[0])["sentiment"]["label"]
    r = _cli("evaluate", str(bundle), str(data["sentiment"]), "--task", "sentiment")
    assert r.returncode == 0 and "macro-F1" in r.stdout


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    r = _cli("evaluate", str(tmp_path), str(tmp_path / "missing.csv"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "does not exist" in r.stderr
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    r = _cli("train", "--random-init", "--out", str(tmp_path / "r"), "--topic-train", str(tmp_path / "bad.csv"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
