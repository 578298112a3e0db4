"""Loading labeled data: formats, label mapping, bad rows, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.data import DataError, load_examples, map_label
from training.metrics import classification_report, expected_calibration_error


@pytest.mark.parametrize(
    ("raw", "want"),
    [("Bearish", "negative"), ("bullish", "positive"), ("Neutral", "neutral"), ("0", "negative"),
     ("1", "positive"), ("2", "neutral"), ("negative", "negative"), ("meh", None), (None, None)],
)  # fmt: skip
def test_sentiment_label_mapping(raw: object, want: str | None) -> None:
    assert map_label("sentiment", raw) == want


def test_topic_labels_by_name_or_index() -> None:
    assert map_label("topic", "Earnings") == "Earnings"
    assert map_label("topic", "5") == "Earnings"
    assert map_label("topic", "Sports") is None


def test_csv_bad_rows_counted_and_text_normalised(tmp_path: Path) -> None:
    f = tmp_path / "s.csv"
    f.write_text(
        "text,label\n"
        '"Stocks fall &amp; bonds rally https://t.co/x",Bearish\n'
        '"",Bullish\n'
        '"   ",Neutral\n'
        '"Great quarter",Ecstatic\n'
        '"Fine day",2\n',
        encoding="utf-8",
    )
    ex = load_examples(f, "sentiment")
    assert ex.texts == ["Stocks fall & bonds rally url", "Fine day"]
    assert ex.labels == [0, 1]
    assert ex.skipped == {"empty_text": 2, "unknown_label": 1}
    assert ex.fingerprint() == load_examples(f, "sentiment").fingerprint()


def test_jsonl_with_custom_columns(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text(
        "\n".join(json.dumps(r) for r in [{"body": "Fed hikes", "y": "Fed | Central Banks"}, {"body": "x"}])
        + "\nnot json\n"
    )
    ex = load_examples(f, "topic", text_col="body", label_col="y")
    assert ex.texts == ["Fed hikes"] and ex.skipped["unknown_label"] == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "does not exist"), (b"\xff\xfe\x00bad", "not UTF-8"), (b"a,b\n1,2\n", "no column 'text'"),
     (b"text,label\nhello,nonsense\n", "no usable rows")],
)  # fmt: skip
def test_unusable_files_fail_with_one_line(tmp_path: Path, content: bytes | None, message: str) -> None:
    f = tmp_path / "d.csv"
    if content is not None:
        f.write_bytes(content)
    with pytest.raises(DataError, match=message) as exc:
        load_examples(f, "sentiment")
    assert "\n" not in str(exc.value)


def test_metrics_known_values() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    rep = classification_report(probs, [0, 1, 1, 1], ["a", "b"])
    assert rep["accuracy"] == 0.75
    assert rep["confusion"] == [[1, 0], [1, 2]]
    assert rep["per_class"]["a"]["precision"] == 0.5 and rep["per_class"]["b"]["recall"] == pytest.approx(
        0.6667, abs=1e-3
    )
    assert rep["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2, abs=1e-3)
    perfect = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(perfect, np.array([0, 1])) == pytest.approx(0.0)


def test_parquet_rows_and_unreadable_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    f = tmp_path / "s.parquet"
    pq.write_table(pa.table({"text": ["Stocks rally", "", "Bonds slip"], "label": [1, 2, 0]}), f)
    ex = load_examples(f, "sentiment")
    assert ex.texts == ["Stocks rally", "Bonds slip"] and ex.labels == [2, 0] and ex.skipped["empty_text"] == 1
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="Parquet"):
        load_examples(bad, "sentiment")


def test_batch_plan_covers_rows_and_balances_tasks() -> None:
    import random

    from training.data import Examples
    from training.train import plan_batches

    sets = {
        "topic": Examples("topic", ["t"] * 40, [0] * 40, "a"),
        "sentiment": Examples("sentiment", ["s"] * 10, [0] * 10, "b"),
    }
    plain = plan_batches(sets, 8, random.Random(1))
    assert sorted(i for t, b in plain if t == "sentiment" for i in b) == list(range(10))
    assert sum(len(b) for t, b in plain if t == "topic") == 40
    balanced = plan_batches(sets, 8, random.Random(1), balanced=True)
    sent = [i for t, b in balanced if t == "sentiment" for i in b]
    assert len(sent) == 40 and set(sent) == set(range(10))
    assert plan_batches(sets, 8, random.Random(1)) == plain  # seeded
