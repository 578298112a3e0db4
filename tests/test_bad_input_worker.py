"""Every kind of bad or odd input through a real worker in one stream: each lands where DESIGN.md says.

The validator's own table (tests/test_validate.py) and the fuzz run (tests/test_fuzz.py)
cover the cases in depth; this proves the running worker routes them and never stops.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from monitor.testing import BROKER_KINDS, TopicNames, TopicReader, WorkerProcess, make_topics, open_broker, produce
from tests.tiny_bundle import make_bundle

pytestmark = pytest.mark.slow


def j(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def cases(now_ms: int) -> list[tuple[str, bytes, str]]:
    """(case, raw message, where it must go: "scored" or the dead-letter reason), stamped `now_ms`.

    Stamped when the test runs, not when the module is imported: in a full suite the import is
    minutes earlier, the duplicate's window is then long past, and whether its second copy is
    counted as a duplicate or as late depended on a 1 s window tick landing between the copies.
    """
    return [
        ("not JSON", b"<html>oops</html>", "not_json"),
        ("JSON not an object", b"[1, 2, 3]", "not_object"),
        ("missing text", j({"id": "c-missing"}), "missing_text"),
        ("empty text", j({"id": "c-empty", "text": ""}), "empty_text"),
        ("whitespace text", j({"id": "c-ws", "text": " \t\n\u3000 "}), "empty_text"),
        ("text of wrong type", j({"id": "c-type", "text": {"body": "x"}}), "bad_type"),
        ("id of wrong type", j({"id": 1.5, "text": "float id"}), "bad_id"),
        ("huge text (10 MB)", j({"id": "c-huge", "text": "x" * 10_000_000}), "too_large"),
        ("deeply nested JSON", b'{"id": "c-deep", "text": "x", "n": ' + b"[" * 5000 + b"]" * 5000 + b"}", "too_deep"),
        ("invalid UTF-8", b'{"id": "c-utf8", "text": "bad \xc3\x28 bytes"}', "not_utf8"),
        ("NUL bytes only", j({"id": "c-nul0", "text": "\x00\x00\x00"}), "empty_text"),
        ("bad timestamp", j({"id": "c-ts", "text": "x", "published_at": "yesterday"}), "bad_timestamp"),
        ("NUL bytes inside text", j({"id": "c-nul", "text": "Tesla\x00 shares plunge"}), "scored"),
        ("control characters", j({"id": "c-ctrl", "text": "Apple\x07\x1b[31m beats\x08 estimates"}), "scored"),
        (
            "mixed languages and emoji",
            j({"id": "c-mix", "text": "特斯拉股价暴跌 📉 Tesla stock crashes, la bourse chute"}),
            "scored",
        ),
        (
            "unknown fields",
            j({"id": "c-unk", "text": "Bank shares rise", "extra": {"a": [1, 2]}, "score": 5}),
            "scored",
        ),
        (
            "future timestamp",
            j({"id": "c-future", "text": "Oil rises", "published_at": now_ms + 86_400_000 * 30}),
            "scored",
        ),
        (
            "ancient timestamp",
            j({"id": "c-ancient", "text": "Gold falls", "published_at": "1971-01-01T00:00:00Z"}),
            "scored",
        ),
        ("duplicate id (1st)", j({"id": "c-dup", "text": "Nvidia shares jump", "published_at": now_ms}), "scored"),
        ("duplicate id (2nd)", j({"id": "c-dup", "text": "Nvidia shares jump", "published_at": now_ms}), "scored"),
    ]


@pytest.mark.parametrize("kind", BROKER_KINDS)
def test_every_bad_input_goes_where_design_says_and_the_worker_survives(kind: str, tmp_path: Path) -> None:
    with open_broker(kind, tmp_path) as broker:
        topics = TopicNames()
        make_topics(broker.bootstrap, topics, input_max_bytes=16 << 20)  # the 10 MB text reaches the worker
        # Lateness far beyond the test's length: the duplicate's window must still be open when its
        # second copy arrives, even when the test starts seconds before a minute (window) boundary.
        env = {"FINSENT_WINDOWS__ALLOWED_LATENESS_S": "600"}
        worker = WorkerProcess(broker, topics, make_bundle(tmp_path / "tiny"), tmp_path, env=env).start()
        try:
            rows = cases(int(time.time() * 1000))  # stamped now, not at import
            good = [
                j({"id": f"g{i}", "text": f"Microsoft shares steady {i}", "tickers": ["MSFT"]})
                for i in range(len(rows))
            ]
            stream: list[bytes] = []
            for g, (_, raw, _) in zip(good, rows, strict=True):
                stream += [g, raw]
            produce(broker.bootstrap, topics.news, stream)
            want_scored = len(good) + sum(1 for *_, where in rows if where == "scored")
            want_dead = Counter(where for *_, where in rows if where != "scored")
            scored = TopicReader(broker.bootstrap, topics.scored)
            dead = TopicReader(broker.bootstrap, topics.deadletter)
            got = scored.wait_for(lambda v: len(v) >= want_scored, timeout=90)
            dl = dead.wait_for(lambda v: len(v) >= sum(want_dead.values()), timeout=60)
            assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail()
            assert Counter(d["error"] for d in dl) == want_dead
            ids = Counter(x["id"] for x in got)
            assert all(ids[f"g{i}"] == 1 for i in range(len(good)))
            assert ids["c-dup"] == 2  # both copies scored (at-least-once); the windows count the id once
            by_id = {x["id"]: x for x in got}
            assert by_id["c-future"]["event_time_source"] == "future_clamped"
            assert by_id["c-ancient"]["event_time_source"] == "published"
            assert by_id["c-unk"]["extra"] == {"a": [1, 2]}
            assert "TSLA" in by_id["c-nul"]["entities"] and "TSLA" in by_id["c-mix"]["entities"]
            for d in dl:
                assert d["origin"]["topic"] == topics.news and d["origin"]["offset"] >= 0 and d["detail"]
            deadline = time.monotonic() + 20
            while worker.metric("finsent_duplicate_items_total") < 1 and time.monotonic() < deadline:
                time.sleep(0.5)
            assert worker.metric("finsent_duplicate_items_total") >= 1
            table = "\n".join(f"  {case:<28} -> {where}" for case, _, where in rows)
            print(f"\nBAD-INPUT through the worker ({len(rows)} cases among {len(good)} good items):\n{table}")
            scored.close()
            dead.close()
        finally:
            worker.stop()
