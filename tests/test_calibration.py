"""Temperature scaling: the fit (pure), the manifest contract, the worker applying it, `finsent-train calibrate`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from monitor.core.scores import row_temperatures, softmax
from monitor.model.bundle import BundleError, load_bundle, write_manifest
from monitor.model.scorer import Scorer
from monitor.model.session import Classifier
from tests.tiny_bundle import make_bundle
from training.data import Examples
from training.metrics import expected_calibration_error, reliability
from training.temperature import MIN_ROWS, cross_fitted_probs, fit_pool, fit_temperature, halves, nll


def _overconfident(n: int, t_true: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose labels are drawn from softmax(logits / t_true): the right temperature is t_true."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3, (n, 3)).astype(np.float32)
    p = softmax(z, t_true)
    y = np.array([rng.choice(3, p=row / row.sum()) for row in p.astype(np.float64)])
    return z, y


def test_fit_recovers_the_temperature_that_generated_the_labels() -> None:
    z, y = _overconfident(20_000, 2.0)
    t = fit_temperature(z, y)
    assert 1.9 < t < 2.1
    assert nll(z, y, t) < min(nll(z, y, t * 0.9), nll(z, y, t * 1.1), nll(z, y, 1.0))


def test_fit_stays_in_range_when_the_model_is_always_right() -> None:
    z = np.array([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]] * 50, dtype=np.float32)
    y = z.argmax(axis=1)
    assert fit_temperature(z, y) == pytest.approx(0.05, rel=1e-2)  # sharper is always better: the lower bound


def test_cross_fitting_lowers_ece_on_unseen_halves_and_keeps_every_argmax() -> None:
    z, y = _overconfident(4_000, 2.5, seed=1)
    after, folds = cross_fitted_probs(z, y)
    assert all(2.2 < t < 2.8 for t in folds)
    assert expected_calibration_error(after, y) < 0.5 * expected_calibration_error(softmax(z), y)
    assert (after.argmax(axis=1) == z.argmax(axis=1)).all()


def test_halves_are_seeded_disjoint_and_cover_everything() -> None:
    a, b = halves(101, seed=3)
    assert sorted([*a, *b]) == list(range(101)) and abs(len(a) - len(b)) <= 1
    assert (halves(101, seed=3)[0] == a).all() and not (halves(101, seed=4)[0] == a).all()


def test_small_pools_keep_temperature_one() -> None:
    z, y = _overconfident(MIN_ROWS - 1, 2.0)
    assert fit_pool(z, y) is None
    z, y = _overconfident(MIN_ROWS, 2.0)
    assert fit_pool(z, y) is not None


def test_reliability_bins_and_ece_by_hand() -> None:
    # Confidences 0.9, 0.9 (one right), 0.6 (right), 0.5 (wrong): bins (0.8667, 0.9333], (0.5333, 0.6]
    # and (0.4667, 0.5333]; ECE = 2/4 |0.9 - 0.5| + 1/4 |0.6 - 1| + 1/4 |0.5 - 0| = 0.425.
    p = np.array([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.2, 0.6, 0.2], [0.5, 0.3, 0.2]])
    y = np.array([0, 0, 1, 1])
    conf, acc, rows = reliability(p, y)
    assert rows.tolist() == [1, 1, 2]
    assert conf == pytest.approx([0.5, 0.6, 0.9])
    assert acc == pytest.approx([0.0, 1.0, 0.5])
    assert expected_calibration_error(p, y) == pytest.approx(0.425)


def _calibrated(tmp_path: Path, temps: object, languages: tuple[str, ...] = ("en", "zh")) -> Path:
    b = make_bundle(tmp_path / "b", tasks=("sentiment",), languages=languages)
    m = json.loads((b / "manifest.json").read_text())
    m["calibration"] = {"method": "temperature", "temperature": temps}
    write_manifest(b, m)
    return b


def test_scorer_divides_logits_by_the_routes_temperature(tmp_path: Path) -> None:
    b = _calibrated(tmp_path, {"sentiment": {"en": 2.0, "zh": 0.5}})
    bundle = load_bundle(b)
    assert row_temperatures(bundle.temperatures, "sentiment", ["en"]).item() == 2.0
    assert row_temperatures(bundle.temperatures, "topic", ["en"]).item() == 1.0
    texts = ["shares surge record", "fraud lawsuit crash", "the company"]
    c = Classifier.from_bundle(bundle)
    raw = c.logits(c.encode(texts))["sentiment"]
    scorer = Scorer([bundle], providers="cpu")
    # "fr" is declared by no bundle: the default route (en) and its temperature.
    for lang, t in (("en", 2.0), ("zh", 0.5), ("fr", 2.0)):
        got = scorer.score(texts, [lang] * len(texts))
        want = softmax(raw, t)
        for i, out in enumerate(got):
            assert list(out["sentiment"].probs.values()) == pytest.approx(want[i].tolist(), abs=1e-5)
            assert out["sentiment"].label == ["negative", "neutral", "positive"][int(raw[i].argmax())]
    mixed = scorer.score(texts[:2], ["en", "zh"])  # one forward pass, a temperature per item
    assert mixed[0]["sentiment"].probs["positive"] == pytest.approx(float(softmax(raw[0], 2.0)[2]), abs=1e-5)
    assert mixed[1]["sentiment"].probs["negative"] == pytest.approx(float(softmax(raw[1], 0.5)[0]), abs=1e-5)


@pytest.mark.parametrize(
    ("temps", "message"),
    [
        ({"sentiment": {"en": -1.0}}, "must be a number in"),
        ({"sentiment": {"en": True}}, "must be a number in"),
        ({"sentiment": {"en": 100}}, "must be a number in"),
        ({"sentiment": {"de": 1.5}}, "language 'de'"),
        ({"topic": {"en": 1.5}}, "task 'topic'"),
        ([1.5], "must map task"),
    ],
)
def test_bad_calibration_is_refused(tmp_path: Path, temps: object, message: str) -> None:
    with pytest.raises(BundleError, match=message):
        _calibrated(tmp_path, temps)


def test_unknown_calibration_method_is_refused(tmp_path: Path) -> None:
    b = make_bundle(tmp_path / "b", tasks=("sentiment",))
    m = json.loads((b / "manifest.json").read_text())
    m["calibration"] = {"method": "platt", "temperature": {}}
    with pytest.raises(BundleError, match="method 'temperature'"):
        write_manifest(b, m)


def _labeled(texts: list[str], labels: list[int], lang: str, source: str) -> Examples:
    ex = Examples(task="sentiment", texts=texts, labels=labels, source=source)
    ex.langs = [lang] * len(texts)
    return ex


def test_calibrate_bundle_writes_manifest_report_and_is_idempotent(tmp_path: Path) -> None:
    from training.calibrate import calibrate_bundle

    b = make_bundle(tmp_path / "b", tasks=("sentiment",), languages=("en", "zh"))
    words = {0: "fraud crash", 1: "the company", 2: "surge record"}
    rng = np.random.default_rng(0)
    # Noisy labels: the tiny model is sure of every word, so its right temperature is above 1.
    y_en = [int(v) for v in rng.integers(0, 3, 300)]
    texts_en = [words[v if rng.random() < 0.7 else (v + 1) % 3] for v in y_en]
    sets = {
        "noisy_en": _labeled(texts_en, y_en, "en", "noisy"),
        "few_zh": _labeled(["surge"] * 10, [2] * 10, "zh", "few"),
        "phrasebank_75agree": _labeled(texts_en[:60], y_en[:60], "en", "phrasebank"),
    }
    block = calibrate_bundle(b, sets)
    t = block["temperature"]["sentiment"]["en"]
    assert t > 1.0 and "zh" not in block["temperature"]["sentiment"]  # 10 rows: too few to fit
    assert block["pools"]["sentiment/zh"]["note"].startswith("fewer than")
    assert block["sets"]["phrasebank_75agree"]["fitted"] is False  # evaluation-only: reported, never fitted
    assert block["sets"]["noisy_en"]["ece_after"] < block["sets"]["noisy_en"]["ece_before"]
    loaded = load_bundle(b)  # the rewritten manifest still verifies every file, the report among them
    assert loaded.temperatures["sentiment"]["en"] == t and {"calibration.md", "calibration.png"} <= set(
        loaded.manifest["files"]
    )
    assert "| sentiment/en | noisy_en |" in (b / "calibration.md").read_text()
    assert calibrate_bundle(b, sets)["temperature"] == block["temperature"]  # fitted on raw logits


def test_recalibration_refreshes_the_served_report(tmp_path: Path) -> None:
    """eval.md / eval.json and the manifest's metrics follow the new temperature: ECE moves, labels do not."""
    from training.calibrate import calibrate_bundle
    from training.evaluate import SUMMARY_KEYS, bundle_probs, refresh_served_report, reports, write_report

    b = make_bundle(tmp_path / "b", tasks=("sentiment",), languages=("en",))
    words = {0: "fraud crash", 1: "the company", 2: "surge record"}
    rng = np.random.default_rng(0)
    y = [int(v) for v in rng.integers(0, 3, 300)]
    sets = {"noisy_en": _labeled([words[v if rng.random() < 0.7 else (v + 1) % 3] for v in y], y, "en", "noisy")}
    assert refresh_served_report(b, sets) == []  # no report yet: nothing to refresh
    variant = load_bundle(b).variant
    before = reports(sets, bundle_probs(b, sets, variant), variant)  # the export's report, at T = 1
    write_report(before, b, title="tiny 1 (INT8, as served)")
    m = json.loads((b / "manifest.json").read_text())
    m["metrics"] = {"served_variant": variant, variant: {k: {s: v[s] for s in SUMMARY_KEYS} for k, v in before.items()}}
    write_manifest(b, m)
    calibrate_bundle(b, sets)
    assert refresh_served_report(b, sets) == ["noisy_en"]
    after = json.loads((b / "eval.json").read_text())["datasets"]["noisy_en"]
    assert after["ece"] < before["noisy_en"]["ece"]
    assert (after["accuracy"], after["macro_f1"]) == (before["noisy_en"]["accuracy"], before["noisy_en"]["macro_f1"])
    loaded = load_bundle(b)  # the manifest's file hashes cover the rewritten report
    assert loaded.manifest["metrics"][variant]["noisy_en"]["ece"] == after["ece"]
    assert (b / "eval.md").read_text().startswith("# tiny 1 (INT8, as served)")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "training.cli", *args], capture_output=True, text=True, timeout=300)


def test_calibrate_command_errors_are_one_line(tmp_path: Path) -> None:
    r = _cli("calibrate", str(tmp_path / "missing"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "manifest" in r.stderr
    r = _cli("calibrate", "--help")
    assert r.returncode == 0 and "temperature" in r.stdout


def test_a_bundle_with_other_labels_is_refused(tmp_path: Path) -> None:
    from training.calibrate import calibrate_bundle
    from training.data import DataError

    b = make_bundle(tmp_path / "b", tasks=("topic",))  # three test topics, not the taxonomy's twenty
    ex = Examples(task="topic", texts=["court"], labels=[0], source="t")
    with pytest.raises(DataError, match="not the training taxonomy"):
        calibrate_bundle(b, {"t": ex})


def test_calibrate_command_fits_a_users_own_sample_per_language(tmp_path: Path) -> None:
    """`calibrate --file`: the user's labelled Chinese sample alone fits sentiment/zh; English keeps its own sets."""
    import os

    b = make_bundle(tmp_path / "b", tasks=("sentiment",), languages=("en", "zh"))
    rng = np.random.default_rng(1)
    names = {0: "Bearish", 1: "Neutral", 2: "Bullish"}
    words = {0: "fraud crash", 1: "the company", 2: "surge record"}
    valid = tmp_path / "ds" / "twitter_financial_news_sentiment" / "valid.csv"
    valid.parent.mkdir(parents=True)
    rows = [(words[v if rng.random() < 0.7 else (v + 1) % 3], names[v]) for v in rng.integers(0, 3, 120)]
    valid.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    own = tmp_path / "desk_zh.csv"
    own.write_text(
        "text,label\n" + "".join(f"公司公告第{i}号,{['negative', 'neutral', 'positive'][i % 3]}\n" for i in range(90))
    )
    env = {**os.environ, "FINSENT_DATASETS": str(tmp_path / "ds")}
    r = subprocess.run([sys.executable, "-m", "training.cli", "calibrate", str(b), "--file", str(own)],
                       capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    cal = load_bundle(b).manifest["calibration"]
    assert cal["pools"]["sentiment/zh"]["sets"] == ["desk_zh"] and cal["pools"]["sentiment/en"]["sets"] == [
        "tweets_sentiment_valid"
    ]
    assert set(cal["temperature"]["sentiment"]) == {"en", "zh"} and "calibration sentiment/zh" in r.stdout
    r = subprocess.run([sys.executable, "-m", "training.cli", "calibrate", str(b), "--file", str(own), "--lang", "1!"],
                       capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not a language code" in r.stderr
