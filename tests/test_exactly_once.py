"""Exactly-once processing under a worker SIGKILL, on the broker that has transactions (noida-db).

With `worker.processing_guarantee = "exactly_once"` a `read_committed` reader
of the output topics must see every input's scored record once, every trend
window once with its exact count, and each alert state once, although the
worker is killed mid-stream and redoes the work it had not committed.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from monitor.stream.noida import PersistentBroker
from monitor.testing import TopicNames, TopicReader, WorkerProcess, make_topics, produce
from tests.test_worker_integration import _timed_items, surge_env
from tests.tiny_bundle import make_bundle

pytestmark = pytest.mark.slow

WINDOW_MS = 1000
PLAN = [(1, 20)] * 8 + [(16, 20)] * 3 + [(1, 20)] * 8  # (negative, total) per window; a surge in 8-10


def acme(vals: list[dict]) -> list[dict]:
    return [v for v in vals if v["dimension"] == "entity" and v["key"] == "ACME"]


def test_killed_worker_exactly_once_under_read_committed(tmp_path: Path) -> None:
    broker = PersistentBroker(tmp_path / "noida-data").start()
    topics = TopicNames()
    worker = None
    try:
        make_topics(broker.bootstrap, topics)
        env = surge_env(lateness_s=10.0)
        env["FINSENT_WORKER__PROCESSING_GUARANTEE"] = "exactly_once"
        tiny = make_bundle(tmp_path / "tiny")
        worker = WorkerProcess(broker, topics, tiny, tmp_path, app_id=f"eos-{topics.suffix}", env=env).start()
        base = (int(time.time() * 1000) // WINDOW_MS - 60) * WINDOW_MS
        items = _timed_items(base, WINDOW_MS, PLAN, "ACME")
        closer = {"id": "closer", "text": "the company", "tickers": ["ACME"], "published_at": base + 40 * WINDOW_MS}
        scored = TopicReader(broker.bootstrap, topics.scored, committed_only=True)
        # Spread over the 4 input partitions by id, still flowing when the worker dies.
        feed = threading.Thread(
            target=produce,
            args=(broker.bootstrap, topics.news, [*items, closer]),
            kwargs={"pace_every": 20, "pace_s": 0.5},
        )
        feed.start()
        scored.wait_for(lambda v: len(v) >= 120, timeout=60)
        worker.kill()  # mid-stream: outputs of the open transactions are aborted, their inputs redone
        worker = WorkerProcess(broker, topics, tiny, tmp_path, app_id=worker.app_id, env=env).start()
        feed.join(60)
        want = {i["id"] for i in items}
        got = scored.wait_for(lambda v: {x["id"] for x in v} >= want, timeout=120)
        time.sleep(3)  # a duplicate would be committed by now
        got = scored.wait_for(lambda v: False, timeout=1)
        ids = Counter(x["id"] for x in got)
        assert set(ids) >= want, f"{len(want - set(ids))} items never scored\n{worker.log_tail()}"
        repeated = {i: n for i, n in ids.items() if n > 1}
        assert not repeated, f"{len(repeated)} ids seen more than once under read_committed: {list(repeated)[:5]}"
        check_windows_and_alerts(broker.bootstrap, topics, base)
        uncommitted = TopicReader(broker.bootstrap, topics.scored)
        raw = len(uncommitted.wait_for(lambda v: False, timeout=2))
        uncommitted.close()
        print(
            f"\nFAULT worker SIGKILL, exactly-once: {len(got)} scored records for {len(want) + 1} inputs under "
            f"read_committed ({raw} records in the log including aborted ones); windows and alerts once each"
        )
        scored.close()
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()


def check_windows_and_alerts(bootstrap: str, topics: TopicNames, base: int) -> None:
    trends = TopicReader(bootstrap, topics.trends, committed_only=True)
    alerts = TopicReader(bootstrap, topics.alerts, committed_only=True)
    try:
        windows = acme(trends.wait_for(lambda v: len({w["window_start"] for w in acme(v)}) >= len(PLAN), 90))
        per_start = Counter(w["window_start"] for w in windows)
        assert max(per_start.values()) == 1, f"windows emitted twice: {[s for s, n in per_start.items() if n > 1]}"
        by_start = {w["window_start"]: w for w in windows}
        counts = [(by_start.get(base + w * WINDOW_MS) or {}).get("count") for w in range(len(PLAN))]
        negatives = [(by_start.get(base + w * WINDOW_MS) or {}).get("negative") for w in range(len(PLAN))]
        assert (counts, negatives) == ([t for _, t in PLAN], [n for n, _ in PLAN]), (counts, negatives)
        got = acme(alerts.wait_for(lambda v: any(a["state"] == "resolved" for a in acme(v)), timeout=60))
        assert [a["state"] for a in got] == ["firing", "resolved"], got
        assert len({a["alert_id"] for a in got}) == 1, got
    finally:
        trends.close()
        alerts.close()
