"""Bundle verification and ONNX scoring on a tiny real ONNX bundle."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.core.scores import sentiment_score
from monitor.model.bundle import BundleError, load_bundle, write_manifest
from monitor.model.scorer import Scorer, model_text
from monitor.model.service import ModelService
from tests.tiny_bundle import make_bundle


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return make_bundle(tmp_path / "b")


def test_load_bundle_verifies_and_describes(bundle: Path) -> None:
    b = load_bundle(bundle)
    assert b.variant == "int8"
    assert set(b.tasks) == {"topic", "sentiment"}
    assert b.tasks["sentiment"].labels == ("negative", "neutral", "positive")
    assert len(b.sha256) == 64


def test_tampered_file_is_refused(bundle: Path) -> None:
    with open(bundle / "model.int8.onnx", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(bundle)


def test_truncated_model_is_refused(bundle: Path) -> None:
    data = (bundle / "model.int8.onnx").read_bytes()
    (bundle / "model.int8.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError):
        load_bundle(bundle)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: m["tasks"]["sentiment"].update(labels=["pos", "neg", "neu"]), "labels must be"),
        (lambda m: m.pop("tasks"), "lacks 'tasks'"),
        (lambda m: m.update(max_length=2), "max_length"),
        (lambda m: m.update(normalization_version="999"), "normalisation"),
        (lambda m: m["files"].pop("model.int8.onnx"), "no model"),
    ],
)
def test_bad_manifest_is_refused(bundle: Path, mutate, message: str) -> None:
    path = bundle / "manifest.json"
    m = json.loads(path.read_text())
    mutate(m)
    path.write_text(json.dumps(m))
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle)


def test_missing_bundle_dir_and_bad_json(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a directory"):
        load_bundle(tmp_path / "nope")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not readable JSON"):
        load_bundle(tmp_path)


def test_scorer_predicts_and_pads_per_batch(bundle: Path) -> None:
    scorer = Scorer([load_bundle(bundle)], providers="cpu")
    texts = ["shares plunge after fraud lawsuit", "record profit and strong growth", "the company"]
    out = scorer.score(texts)
    assert [o["sentiment"].label for o in out] == ["negative", "positive", "neutral"]
    assert sentiment_score(out[0]["sentiment"].probs) < -0.5 < 0.5 < sentiment_score(out[1]["sentiment"].probs)
    for o in out:
        assert abs(sum(o["topic"].probs.values()) - 1) < 1e-3
    # Batch composition must not change a text's scores (padding is masked).
    alone = scorer.score([texts[2]])[0]["sentiment"].probs
    assert alone == pytest.approx(out[2]["sentiment"].probs, abs=1e-4)


def test_length_sorted_chunks_keep_input_order_and_scores(bundle: Path) -> None:
    words = ["shares", "plunge", "fraud", "record", "profit", "growth", "court", "the", "company", "lawsuit"]
    # Lengths deliberately unsorted so chunking must reorder and restore.
    texts = [" ".join(words[: 1 + (i * 7) % 10] * (1 + i % 3)) for i in range(37)]
    whole = Scorer([load_bundle(bundle)], providers="cpu", bucket_size=0).score(texts)
    chunked = Scorer([load_bundle(bundle)], providers="cpu", bucket_size=4).score(texts)
    assert len(chunked) == len(texts)
    for a, b in zip(whole, chunked, strict=True):
        assert a["sentiment"].label == b["sentiment"].label
        assert a["topic"].label == b["topic"].label
        assert a["sentiment"].probs == pytest.approx(b["sentiment"].probs, abs=1e-4)


def test_separate_single_task_bundles_combine(tmp_path: Path) -> None:
    topic = make_bundle(tmp_path / "t", tasks=("topic",))
    sent = make_bundle(tmp_path / "s", tasks=("sentiment",))
    scorer = Scorer.from_paths([str(topic), str(sent)], providers="cpu")
    out = scorer.score(["court lawsuit crash"])[0]
    assert set(out) == {"topic", "sentiment"}
    assert out["sentiment"].label == "negative"
    with pytest.raises(BundleError, match="would score nothing"):
        Scorer.from_paths([str(sent), str(sent)], providers="cpu")


def test_model_text_truncates_huge_input_and_adds_title() -> None:
    text = model_text("x " * 5_000_000, "Big News", 64)
    assert len(text) <= 64 * 16 + 20
    assert text.startswith("Big News.")
    assert model_text("Big News today", "Big News", 64) == "Big News today"


def test_hot_swap_accepts_good_and_refuses_corrupt_bundle(tmp_path: Path) -> None:
    live = make_bundle(tmp_path / "live", version="1")
    svc = ModelService([live], providers="cpu")
    assert svc.maybe_reload() is None
    # A corrupt drop-in (hash mismatch) is refused; version 1 stays in service.
    with open(live / "model.int8.onnx", "ab") as fh:
        fh.write(b"garbage")
    write_manifest_raw = json.loads((live / "manifest.json").read_text())
    (live / "manifest.json").write_text(json.dumps(write_manifest_raw) + " ")
    assert svc.maybe_reload() is False
    assert svc.scorer.ident["version"] == "1"
    assert svc.score(["fraud"])[0]["sentiment"].label == "negative"
    # A good new version is swapped in.
    shutil.rmtree(live)
    make_bundle(tmp_path / "live", version="2")
    assert svc.maybe_reload() is True
    assert svc.scorer.ident["version"] == "2"


def test_write_manifest_hashes_every_file(tmp_path: Path) -> None:
    b = make_bundle(tmp_path / "b")
    (b / "report.md").write_text("hello")
    m = write_manifest(b, json.loads((b / "manifest.json").read_text()))
    assert "report.md" in m["files"] and "manifest.json" not in m["files"]
    assert load_bundle(b).name == "tiny-test"


def test_wrong_label_count_is_refused_on_load_and_on_swap(tmp_path: Path) -> None:
    bad = make_bundle(tmp_path / "bad")
    m = json.loads((bad / "manifest.json").read_text())
    m["tasks"]["topic"]["labels"] = m["tasks"]["topic"]["labels"][:-1]
    write_manifest(bad, m)
    with pytest.raises(BundleError, match=r"outputs .* scores but the manifest lists"):
        ModelService([bad], providers="cpu")
    live = make_bundle(tmp_path / "live")
    svc = ModelService([live], providers="cpu")
    shutil.rmtree(live)
    shutil.copytree(bad, live)
    assert svc.maybe_reload() is False
    assert svc.score(["fraud"])[0]["sentiment"].label == "negative"


# Multiplies 1e-20 by itself (1e-40, below float32's smallest normal) in a one-node graph small
# enough that onnxruntime runs it on the calling thread: 0.0 there means that thread flushes denormals.
_PROBE = """
import sys, tempfile
from pathlib import Path
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper
from monitor.model.session import session_options
vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None]) for n in "xyz"]
g = helper.make_graph([helper.make_node("Mul", ["x", "y"], ["z"])], "g", vi[:2], vi[2:])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()
x = np.full(64, 1e-20, np.float32)
def probe(sess): return float(sess.run(None, {"x": x, "y": x})[0].max())
if sys.argv[1] == "options":
    s = ort.InferenceSession(m, session_options(denormals_as_zero=sys.argv[2] == "1"), providers=["CPUExecutionProvider"])
    print(probe(s))
else:  # the worker's arrangement: ModelService first, then the same probe on each thread
    from monitor.model.service import ModelService
    from tests.tiny_bundle import make_bundle
    svc = ModelService([make_bundle(Path(tempfile.mkdtemp()) / "b")], providers="cpu")
    s = ort.InferenceSession(m, session_options(denormals_as_zero=False), providers=["CPUExecutionProvider"])
    print(probe(s), svc.executor.submit(probe, s).result())
"""


def _probe(*args: str) -> list[float]:
    # A fresh interpreter each: onnxruntime sets the calling thread's mode from a process's first session.
    r = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    return [float(v) for v in r.stdout.split()]


@pytest.mark.parametrize("flush", [True, False])
def test_session_options_flush_denormals_unless_told_not_to(flush: bool) -> None:
    (product,) = _probe("options", "1" if flush else "0")
    assert product == 0.0 if flush else 0.0 < product < 1.2e-38


def test_scoring_thread_flushes_denormals_and_event_loop_thread_does_not() -> None:
    main_thread, scoring_thread = _probe("service")
    assert scoring_thread == 0.0
    assert 0.0 < main_thread < 1.2e-38


def test_worker_sessions_ask_for_denormals_as_zero(bundle: Path) -> None:
    scorer = Scorer.from_paths([bundle], providers="cpu")
    opts = scorer.models[0].classifier.session.get_session_options()
    assert opts.get_session_config_entry("session.set_denormal_as_zero") == "1"


def _e5_style_bundle(directory: Path) -> Path:
    """The tiny bundle with an XLM-R / e5 style vocabulary: "<s>" is id 0 and "<pad>" id 1, no "[PAD]"."""
    make_bundle(directory)
    tok_file = directory / "tokenizer.json"
    tj = json.loads(tok_file.read_text())
    renamed = {"[PAD]": "<s>", "[UNK]": "<pad>", "[CLS]": "<unk>", "[SEP]": "</s>"}
    tj["model"]["vocab"] = {renamed.get(k, k): v for k, v in tj["model"]["vocab"].items()}
    tj["model"]["unk_token"] = "<unk>"
    tj["padding"] = None
    tok_file.write_text(json.dumps(tj))
    m = json.loads((directory / "manifest.json").read_text())
    write_manifest(directory, {k: v for k, v in m.items() if k != "files"})
    return directory


class _FeedSpy:
    """Wraps an InferenceSession and keeps the feeds of the last run."""

    def __init__(self, session: object) -> None:
        self.session = session
        self.feeds: dict = {}

    def run(self, names: list[str], feeds: dict) -> list:
        self.feeds = feeds
        return self.session.run(names, feeds)  # type: ignore[attr-defined]


def test_scorer_pads_with_the_tokenizers_own_pad_id(tmp_path: Path) -> None:
    """e5's pad is "<pad>" (id 1); a "[PAD]" lookup falling back to 0 would pad with "<s>"."""
    from tokenizers import Tokenizer

    from monitor.model.bundle import tokenizer_pad_id

    b = _e5_style_bundle(tmp_path / "e5")
    scorer = Scorer.from_paths([b], providers="cpu")
    model = scorer.models[0].classifier
    assert model.pad_id == 1
    spy = _FeedSpy(model.session)
    model.session = spy  # type: ignore[assignment]
    scorer.score(["plunge", "the company shares surge record"])
    ids, mask = spy.feeds["input_ids"], spy.feeds["attention_mask"]
    assert ids.shape[1] % 8 == 0 and (ids[mask == 0] == 1).all() and (mask[0] == 0).any()
    # The padding section of tokenizer.json (what `finsent-train export` writes) wins over the vocabulary.
    tok = Tokenizer.from_file(str(b / "tokenizer.json"))
    tok.enable_padding(pad_id=7, pad_token="surge")
    assert tokenizer_pad_id(tok) == 7
    # BERT vocabularies keep "[PAD]" = 0, as the shipped bundle does.
    assert (
        tokenizer_pad_id(
            Tokenizer.from_file(str(Path(__file__).parents[1] / "models" / "finsent-minilm-l6" / "tokenizer.json"))
        )
        == 0
    )


def test_items_are_routed_to_the_first_bundle_declaring_their_language(tmp_path: Path) -> None:
    # bias 20 makes the multilingual stand-in answer "neutral" to everything, so the route shows in the label
    en = make_bundle(tmp_path / "en", version="en")
    ml = make_bundle(tmp_path / "ml", version="ml", bias=20.0, languages=("en", "zh"))
    scorer = Scorer.from_paths([str(en), str(ml)], providers="cpu")
    assert scorer.languages == ("en", "zh")
    assert scorer.route("zh").ident["version"] == "ml"
    assert scorer.route("en").ident["version"] == "en"
    assert scorer.route("fr").lang == "en"  # a language nobody declares takes the default route
    out = scorer.score(["fraud", "fraud", "fraud", "fraud"], ["en", "zh", "fr", None])
    assert [o["sentiment"].label for o in out] == ["negative", "neutral", "negative", "negative"]
    assert all(set(o) == {"topic", "sentiment"} for o in out)
    # the multilingual bundle alone serves both languages in one pass
    alone = Scorer.from_paths([str(ml)], providers="cpu")
    assert [o["sentiment"].label for o in alone.score(["fraud", "fraud"], ["en", "zh"])] == ["neutral"] * 2


def test_a_language_missing_a_task_is_refused(tmp_path: Path) -> None:
    en = make_bundle(tmp_path / "en")
    zh = make_bundle(tmp_path / "zh", tasks=("sentiment",), languages=("zh",))
    with pytest.raises(BundleError, match="no bundle answers topic for language 'zh'"):
        Scorer.from_paths([str(en), str(zh)], providers="cpu")
