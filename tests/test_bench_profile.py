"""The profile summary's component attribution (pure logic over py-spy's collapsed stacks)."""

from __future__ import annotations

from pathlib import Path

from bench.profile import component, summarise


def test_innermost_known_frame_decides_the_component() -> None:
    stack = (
        'process 1:"python";<module> (monitor/cli/worker.py:10);score (monitor/model/scorer.py:170);'
        "run (onnxruntime/capi/onnxruntime_inference_collection.py:266)"
    )
    assert component(stack) == "onnxruntime (model)"
    assert component("main;_score (monitor/model/scorer.py:120)") == "scorer (pad, softmax)"
    assert component("main;validate (monitor/core/validate.py:30);loads (json/__init__.py:346)") == "json encode/decode"
    assert component("main;validate (monitor/core/validate.py:30);_check (monitor/core/validate.py:90)") == "validation"
    assert component("main;something (nowhere.py:1)") == "other"


def test_summary_shares_add_up(tmp_path: Path) -> None:
    raw = tmp_path / "p.txt"
    raw.write_text(
        "t;run (onnxruntime/capi/x.py:1) 30\n"
        "t;send (aiokafka/producer/producer.py:2) 10\n"
        "t;on_message (faust/transport/consumer.py:3) 10\n"
    )
    s = summarise(raw)
    assert s["samples"] == 50
    assert [r["component"] for r in s["rows"]] == ["onnxruntime (model)", "Kafka client (aiokafka)", "Faust"]
    assert s["rows"][0]["share"] == 0.6
