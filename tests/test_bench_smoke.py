"""The benchmark harness still runs end to end (tiny sizes; it reports, it asserts no timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.train]
REPO = Path(__file__).resolve().parent.parent


def test_bench_smoke_writes_table_and_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    r = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "texts_per_s" in r.stdout and "items_per_s" in r.stdout
    res = json.loads(out.read_text())
    paths = {row["path"] for row in res["model"]["rows"]}
    assert {
        "torch fp32",
        "onnxruntime fp32",
        "onnxruntime int8 weight-only",
        "onnxruntime int8 dynamic",
        "onnxruntime int8 dynamic-smooth",
    } <= paths
    agreement = res["model"]["int8_argmax_agreement_vs_torch"]
    assert agreement["texts"] == 128 and set(agreement["onnxruntime int8 dynamic-smooth"]) == {"topic", "sentiment"}
    assert "int8 dynamic-smooth, every MatMul" in agreement
    assert {row["bucket"] for row in res["serving"]["rows"]} >= {"none (pad to longest)", 16}
    assert res["model"]["ceiling_items_per_s"] > 0
    assert res["pipeline"]["sustained"]["items_per_s"] > 0 and res["pipeline"]["latency"]


def test_paced_bench_reports_cpu_batches_and_latency_per_broker_log_level(tmp_path: Path) -> None:
    out = tmp_path / "paced.json"
    r = subprocess.run(
        [sys.executable, "-m", "bench.paced", "--rates", "20", "--seconds", "2", "--burst", "40",
         "--broker-log", "info,warn", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    rows = {(row["broker_log"], row["rate"]): row for row in res["rows"]}
    assert set(rows) == {("info", "burst"), ("info", 20.0), ("warn", "burst"), ("warn", 20.0)}
    for level in ("info", "warn"):
        row = rows[(level, 20.0)]
        assert row["scored"] == row["items"] == 40
        assert row["batches"] >= 1 and row["mean_batch"] >= 1 and row["p99"] >= row["p50"] > 0
        assert row["broker_cores"] > 0 and row["worker_cores"] > 0
        assert rows[(level, "burst")]["scored"] == 40 and rows[(level, "burst")]["items_per_s"] > 0
    # The side-by-side point of the option: the two levels really differ in what the broker writes.
    assert rows[("info", 20.0)]["log_bytes_total"] > 100 * max(1, rows[("warn", 20.0)]["log_bytes_total"])
    assert res["scorer_alone_texts_per_s"] > 0 and {s["broker_log"] for s in res["summary"]} == {"info", "warn"}


def test_paced_bench_runs_input_mixes_and_bundle_sets_side_by_side(tmp_path: Path) -> None:
    """Mixed input reaches both shipped bundles (half the items scored as Chinese, routed by script); a
    worker given the English bundle alone counts the Chinese half under "other"."""
    out = tmp_path / "paced.json"
    both = "models/finsent-minilm-l6,models/finsent-multilingual"
    r = subprocess.run(
        [sys.executable, "-m", "bench.paced", "--rates", "20", "--seconds", "2", "--texts", "en,mixed",
         "--model", both, "--model", "models/finsent-minilm-l6", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    rows = {(row["texts"], row["bundles"]): row for row in res["rows"]}
    pair, alone = "finsent-minilm-l6+finsent-multilingual", "finsent-minilm-l6"
    assert set(rows) == {(t, b) for t in ("en", "mixed") for b in (pair, alone)}
    assert all(row["scored"] == 40 for row in rows.values())
    assert rows[("en", pair)]["langs"] == rows[("en", alone)]["langs"] == {"en": 40}
    assert rows[("mixed", pair)]["langs"] == {"en": 20, "zh": 20}
    assert rows[("mixed", alone)]["langs"] == {"en": 20, "other": 20}
    assert len(res["summary"]) == 4


def test_paced_bench_refuses_bad_rates_in_one_line() -> None:
    r = subprocess.run([sys.executable, "-m", "bench.paced", "--rates", "fast"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--rates" in r.stderr.splitlines()[-1]
    r = subprocess.run([sys.executable, "-m", "bench.paced", "--broker-log", "info,loud"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--broker-log" in r.stderr.splitlines()[-1]
    r = subprocess.run([sys.executable, "-m", "bench.paced", "--texts", "en,fr"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--texts" in r.stderr.splitlines()[-1]
    r = subprocess.run([sys.executable, "-m", "bench.paced", "--model", "no/such/bundle"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr and "no/such/bundle" in r.stderr.splitlines()[-1]


def test_candidates_bench_compares_bundles_on_every_set(tmp_path: Path) -> None:
    from bench.candidates import DATASETS

    if not DATASETS.is_dir():
        pytest.skip(f"evaluation datasets not at {DATASETS}")
    out = tmp_path / "candidates.json"
    bundles = [REPO / "models" / "finsent-minilm-l6", REPO / "models" / "finsent-multilingual"]
    r = subprocess.run(
        [sys.executable, "-m", "bench.candidates", *map(str, bundles), "--limit", "40", "--rounds", "1",
         "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| candidate |" in r.stdout
    res = json.loads(out.read_text())["results"]
    for b in bundles:
        row = res[str(b)]
        assert set(row["sets"]) == {"tweets_sentiment", "sentfin", "phrasebank", "finfe", "tweets_topic", "finnl"}
        assert set(row["cpu_ms"]) == {"en@1", "en@32", "zh@1", "zh@32"} and row["size_mb"] > 1
    # The English-only bundle cannot read Chinese; the multilingual one can (40 texts: a loose bound).
    assert res[str(bundles[1])]["sets"]["finfe"]["macro_f1"] > res[str(bundles[0])]["sets"]["finfe"]["macro_f1"] + 0.2
