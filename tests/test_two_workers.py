"""Two workers in one group: a takeover under fault, gauges that follow their partitions, gauges after a restart.

Real `finsent worker` processes on the embedded broker (tansu) only. On the
persistent broker (noida-db) a SIGKILLed member is never expired from the
group (docs/BROKERS.md), so its partitions would never move to the survivor
and the takeover these tests are about could not happen there.

Every entity's trend events are keyed `entity:<ticker>`, so each company
lives on exactly one worker: the entities are chosen two per partition, so
whatever the assignment both workers own some. Items are produced in
event-time order at a fixed pace (as in tests/test_worker_integration.py),
and the allowed lateness is longer than a takeover takes in event time, so
the items a dead worker left unscored still reach their windows.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka.partitioner.default import murmur2

from monitor.stream.broker import EmbeddedBroker
from monitor.stream.noida import PersistentBroker
from monitor.testing import TopicNames, TopicReader, WorkerProcess, make_topics, open_broker, produce
from tests.test_worker_integration import surge_env, window_env
from tests.tiny_bundle import make_bundle

pytestmark = pytest.mark.slow

PARTITIONS = 4
WINDOW_MS = 1000
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker | PersistentBroker]:
    with open_broker("tansu", tmp_path_factory.mktemp("tansu")) as b:
        yield b


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return make_bundle(tmp_path / "tiny")


def partition_of(dimension: str, key: str) -> int:
    """The trend-events partition of a key (the producer's default partitioner: murmur2 of the key)."""
    return (murmur2(f"{dimension}:{key}".encode()) & 0x7FFFFFFF) % PARTITIONS


def spread_entities(per_partition: int, prefix: str) -> list[str]:
    """Ticker-shaped names, `per_partition` on each trend-events partition, in partition order."""
    by: dict[int, list[str]] = defaultdict(list)
    for a in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        for b in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
            name = f"{prefix}{a}{b}"
            if len(by[partition_of("entity", name)]) < per_partition:
                by[partition_of("entity", name)].append(name)
    return [n for p in range(PARTITIONS) for n in by[p]]


def series(worker: WorkerProcess, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every series of one metric on a worker's /metrics: sorted label pairs -> value."""
    out = {}
    for line in worker.scrape().splitlines():
        if line.startswith(name + "{"):
            head, _, value = line.rpartition(" ")
            out[tuple(sorted(LABEL.findall(head)))] = float(value)
    return out


def key_pairs(worker: WorkerProcess, name: str = "finsent_negative_share") -> set[tuple[str, str]]:
    return {(dict(labels)["dimension"], dict(labels)["key"]) for labels in series(worker, name)}


def input_partitions(worker: WorkerProcess, topic: str) -> set[int]:
    """The input partitions the worker owns now (it exports the consumer lag of those only)."""
    return {
        int(dict(labels)["partition"])
        for labels in series(worker, "finsent_consumer_lag")
        if (("topic", topic) in labels)
    }


def wait_until(check: Callable[[], Any], timeout: float, step: float = 0.2) -> Any:
    """Poll `check` until it returns something truthy; that value, or the last falsy one at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(step)


def wait_for_split(a: WorkerProcess, b: WorkerProcess, topic: str, timeout: float = 120) -> tuple[set[int], set[int]]:
    """Wait until the two workers own disjoint, non-empty shares of the input partitions."""

    def split() -> tuple[set[int], set[int]] | None:
        pa, pb = input_partitions(a, topic), input_partitions(b, topic)
        return (pa, pb) if pa and pb and not pa & pb and pa | pb == set(range(PARTITIONS)) else None

    got = wait_until(split, timeout)
    assert got, f"no split: {input_partitions(a, topic)} / {input_partitions(b, topic)}\n{b.log_tail()}"
    return got


def items_for(base: int, plans: dict[str, list[tuple[int, int]]]) -> list[dict[str, Any]]:
    """Items in event-time order: per window, each entity's (negatives, total), entities interleaved."""
    items = []
    for w in range(max(len(p) for p in plans.values())):
        for entity, plan in plans.items():
            if w < len(plan):
                neg, total = plan[w]
                for i in range(total):
                    items.append({
                        "id": f"{entity}-{w}-{i}",
                        "text": "shares plunge fraud crash" if i < neg else "the company shares",
                        "tickers": [entity],
                        "published_at": base + w * WINDOW_MS + 10 + i,
                    })  # fmt: skip
    return items


def entity_records(vals: list[dict[str, Any]], entity: str) -> list[dict[str, Any]]:
    return [v for v in vals if v["dimension"] == "entity" and v["key"] == entity]


def test_two_workers_one_killed_mid_surge_the_other_takes_over(
    kafka: EmbeddedBroker | PersistentBroker, tmp_path: Path, tiny: Path
) -> None:
    """SIGKILL the worker that owns a firing surge while the stream goes on: the other finishes the job, exactly."""
    topics = TopicNames()
    make_topics(kafka.bootstrap, topics)
    # Event time runs at the clock's pace and windows wait 40 s of it for late items: a takeover
    # may take up to 40 s of wall time (a loaded CI machine took over 20 s) before the items the
    # dead worker left reach their windows.
    # Event times lie minutes in the past: a minute's idle grace keeps the watermark of a
    # partition that has seen no item yet from closing their windows while the workers start.
    lateness_ms = 40_000
    env = surge_env(lateness_s=lateness_ms / 1000, idle_s=60.0)
    app_id = f"two-{topics.suffix}"
    first = WorkerProcess(kafka, topics, tiny, tmp_path / "a", app_id=app_id, env=env).start()
    workers = [first]
    alerts = TopicReader(kafka.bootstrap, topics.alerts)
    try:
        # The first worker owns every partition before the second joins: the partitions it
        # takes back from the killed one are partitions it has owned before.
        assert wait_until(lambda: input_partitions(first, topics.news) == set(range(PARTITIONS)), 120)
        second = WorkerProcess(kafka, topics, tiny, tmp_path / "b", app_id=app_id, env=env).start()
        workers.append(second)
        _, theirs = wait_for_split(first, second, topics.news)
        stream = TakeoverStream(kafka.bootstrap, topics, lateness_ms, theirs)
        stream.start()
        fired = entity_records(
            alerts.wait_for(lambda v: any(a["state"] == "firing" for a in entity_records(v, stream.surging)), 120),
            stream.surging,
        )
        assert [a["state"] for a in fired] == ["firing"], "\n".join(w.log_tail(30) for w in workers)
        surge_labels = (("dimension", "entity"), ("key", stream.surging), ("severity", fired[0]["severity"]))
        # Trend-events partitions are assigned with the input partitions of the same number.
        owners = wait_until(lambda: [w for w in workers if series(w, "finsent_surge_active").get(surge_labels)], 30)
        assert owners == [second], "the second worker, alone, exports the surge of a key in its partitions"
        assert stream.producer.is_alive(), "the stream ended before the surge fired: the kill would not be mid-stream"
        second.kill()
        killed, kill_ms = time.monotonic(), int(time.time() * 1000)
        owns_all = wait_until(lambda: input_partitions(first, topics.news) == set(range(PARTITIONS)), 120)
        took_over_s = time.monotonic() - killed
        assert owns_all, f"the survivor never took over:\n{first.log_tail()}"
        # The surge gauge comes from the table, before any of the surging key's windows closes there.
        restored = wait_until(lambda: series(first, "finsent_surge_active").get(surge_labels) == 1.0, 60)
        gauges_s = time.monotonic() - killed
        resolved = [a for a in entity_records(alerts.wait_for(lambda v: False, 0.5), stream.surging)
                    if a["state"] == "resolved"]  # fmt: skip
        assert not resolved, f"the surge resolved at the takeover (windows closed early?): {resolved[0]}"
        assert restored, f"surge gauge not restored on the survivor:\n{first.log_tail()}"
        assert ("entity", stream.surging) in key_pairs(first)
        stream.finish()
        got = check_takeover_outputs(kafka.bootstrap, topics, stream, alerts, first)
        first_scored = first_scored_from(kafka.bootstrap, topics, theirs, kill_ms)
        print(
            f"\nFAULT two-workers: killed the owner of {stream.surging}'s firing surge mid-stream; the survivor "
            f"owned all {PARTITIONS} partitions {took_over_s:.1f} s after the kill, scored its first item from a "
            f"partition it did not own {first_scored:.1f} s after, and exported the surge gauge from the table "
            f"{gauges_s:.1f} s after; {len(stream.items)} of {len(stream.items)} items scored, "
            f"{len(stream.plans)} x {stream.n_windows} windows exact ({got['copies']} trend records re-sent for a "
            f"window, each exact); alerts {got['states']} with one alert_id ({got['duplicates']} redelivered "
            f"duplicates); 0 dead letters"
        )
    finally:
        alerts.close()
        for w in workers:
            w.stop()


class TakeoverStream:
    """Eight companies, two per partition, paced in event time; one of the second worker's companies surges.

    Event time runs at the clock's pace: one window of every company per
    second. The surge's firing window closes 40 s after it (the lateness),
    well before the stream ends; the window that resolves it closes only on
    the flush items sent after the stream, so nothing the survivor does
    before then can resolve it.
    """

    def __init__(self, bootstrap: str, topics: TopicNames, lateness_ms: int, surging_on: set[int]) -> None:
        self.bootstrap, self.topic = bootstrap, topics.news
        entities = spread_entities(2, "Q")
        self.surging = next(e for e in entities if partition_of("entity", e) in surging_on)
        calm, surge, tail = 10, 30, 40
        self.n_windows = calm + surge + tail
        self.plans = {e: [(1, 6)] * self.n_windows for e in entities}
        self.plans[self.surging] = [(1, 6)] * calm + [(6, 6)] * surge + [(1, 6)] * tail
        self.base = (int(time.time() * 1000) // WINDOW_MS - self.n_windows - 120) * WINDOW_MS
        self.paced = items_for(self.base, self.plans)
        # Then one item per partition far past the last window (in event time): every planned window closes.
        flush_at = self.base + (self.n_windows + 2) * WINDOW_MS + lateness_ms
        self.flush = [{"id": f"flush-{n}", "text": "the company shares", "tickers": [n], "published_at": flush_at}
                      for n in spread_entities(1, "Z")]  # fmt: skip
        self.items = self.paced + self.flush
        self.failed: list[BaseException] = []
        self.producer = threading.Thread(target=self._produce, daemon=True)

    def _produce(self) -> None:
        try:
            produce(self.bootstrap, self.topic, self.paced, pace_every=len(self.plans) * 6, pace_s=1.0)
        except BaseException as exc:  # re-raised by finish()
            self.failed.append(exc)

    def start(self) -> None:
        self.producer.start()

    def finish(self) -> None:
        self.producer.join(300)
        assert not self.failed and not self.producer.is_alive(), self.failed
        produce(self.bootstrap, self.topic, self.flush)


def check_takeover_outputs(
    bootstrap: str, topics: TopicNames, stream: TakeoverStream, alerts: TopicReader, survivor: WorkerProcess
) -> dict[str, Any]:
    """Every id scored, every planned window exact (each copy of it), one surge, nothing dead-lettered."""
    plans, base, surging = stream.plans, stream.base, stream.surging
    scored, trends, dead = (TopicReader(bootstrap, t) for t in (topics.scored, topics.trends, topics.deadletter))
    try:
        want_ids = {i["id"] for i in stream.items}
        got = scored.wait_for(lambda v: {x["id"] for x in v} >= want_ids, timeout=180)
        assert {x["id"] for x in got} >= want_ids, f"unscored: {sorted(want_ids - {x['id'] for x in got})[:10]}"

        def complete(vals: list[dict[str, Any]]) -> bool:
            return all(len({w["window_start"] for w in entity_records(vals, e)}) >= len(p) for e, p in plans.items())

        windows = trends.wait_for(complete, timeout=180)
        wrong, copies = [], 0
        for entity, plan in plans.items():
            recs = entity_records(windows, entity)
            copies += len(recs) - len({r["window_start"] for r in recs})
            by_start: dict[int, list[dict[str, Any]]] = defaultdict(list)
            for r in recs:
                by_start[r["window_start"]].append(r)
            for w, (neg, total) in enumerate(plan):
                got_w = [(r["count"], r["negative"], r["late_count"]) for r in by_start.get(base + w * WINDOW_MS, [])]
                if not got_w or any(c != total or n != neg for c, n, _ in got_w):
                    wrong.append((entity, w, got_w, (total, neg)))
        assert not wrong, f"windows not exact (entity, window, [(count, negative, late)], want): {wrong[:10]}"
        vals = alerts.wait_for(lambda v: any(a["state"] == "resolved" for a in entity_records(v, surging)), 120)
        vals = alerts.wait_for(lambda v: False, timeout=3)  # a duplicate would arrive by now
        mine = entity_records(vals, surging)
        ids = {a["alert_id"] for a in mine}
        states = [a["state"] for a in mine]
        assert len(ids) == 1 and set(states) == {"firing", "resolved"}, mine
        assert states.index("firing") < states.index("resolved"), states
        others = [a for a in vals if a["dimension"] == "entity" and a["key"] != surging]
        assert not others, f"calm companies fired: {others[:3]}"
        assert dead.wait_for(lambda v: False, timeout=2) == []
        assert {("entity", e) for e in plans} <= key_pairs(survivor), "the survivor exports every company's gauges"
        distinct = list(dict.fromkeys(states))
        return {"states": distinct, "duplicates": len(mine) - len(distinct), "copies": copies}
    finally:
        for reader in (scored, trends, dead):
            reader.close()


def first_scored_from(bootstrap: str, topics: TopicNames, partitions: set[int], after_ms: int) -> float:
    """Seconds from `after_ms` to the first scored record of an item from one of those input partitions."""
    news, scored = TopicReader(bootstrap, topics.news), TopicReader(bootstrap, topics.scored)
    try:
        news.wait_for(lambda v: False, timeout=3)
        scored.wait_for(lambda v: False, timeout=3)
        where = {json.loads(r.value)["id"]: r.partition for r in news.records}
        stamps = [r.timestamp for r in scored.records
                  if r.timestamp >= after_ms and where.get(json.loads(r.value)["id"]) in partitions]  # fmt: skip
        return (min(stamps) - after_ms) / 1000 if stamps else float("nan")
    finally:
        news.close()
        scored.close()


def test_gauges_move_with_partitions_to_a_newly_started_worker(
    kafka: EmbeddedBroker | PersistentBroker, tmp_path: Path, tiny: Path
) -> None:
    """A second worker joins: the first stops exporting the keys it handed over; the second exports them at once."""
    topics = TopicNames()
    make_topics(kafka.bootstrap, topics)
    env = window_env(1.0, lateness_s=1.0, idle_s=30.0)  # each company's first window closes on its later items
    app_id = f"move-{topics.suffix}"
    entities = spread_entities(2, "M")
    base = (int(time.time() * 1000) // WINDOW_MS - 60) * WINDOW_MS
    items = items_for(base, {e: [(1, 5)] * 3 for e in entities})
    first = WorkerProcess(kafka, topics, tiny, tmp_path / "a", app_id=app_id, env=env).start()
    second = None
    try:
        produce(kafka.bootstrap, topics.news, items)
        want = {("entity", e) for e in entities}
        assert wait_until(lambda: key_pairs(first) >= want, 120), f"{key_pairs(first)}\n{first.log_tail()}"
        before = key_pairs(first)
        second = WorkerProcess(kafka, topics, tiny, tmp_path / "b", app_id=app_id, env=env).start()
        joined = time.monotonic()
        mine, theirs = wait_for_split(first, second, topics.news)

        def moved() -> bool:
            a, b = key_pairs(first), key_pairs(second)
            return bool(a and b and not a & b and a | b == before)

        settled = wait_until(moved, 60)
        moved_s = time.monotonic() - joined
        a, b = key_pairs(first), key_pairs(second)
        assert settled, f"both export {sorted(a & b)}; first only {sorted(a - b)}; second only {sorted(b - a)}"
        for worker, owned in ((first, mine), (second, theirs)):
            exported = {k for d, k in key_pairs(worker) if d == "entity"}
            assert exported == {e for e in entities if partition_of("entity", e) in owned}
        print(
            f"\nFAULT rebalance-gauges: a second worker joined and took partitions {sorted(theirs)}; "
            f"{len(b)} of {len(before)} key series moved to it and left the first within {moved_s:.1f} s "
            f"of its start, none exported by both"
        )
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_surge_gauge_restored_after_a_restart_before_any_window_closes(
    kafka: EmbeddedBroker | PersistentBroker, tmp_path: Path, tiny: Path
) -> None:
    """SIGTERM while a surge fires, restart: `finsent_surge_active` is 1 again from the table, not a window later."""
    topics = TopicNames()
    make_topics(kafka.bootstrap, topics)
    # A 10-minute idle time: after the restart nothing closes a window of the key (no input
    # arrives), so whatever the gauges read then comes from the table.
    env = surge_env(lateness_s=2.0, idle_s=600.0)
    app_id = f"restart-{topics.suffix}"
    base = (int(time.time() * 1000) // WINDOW_MS - 60) * WINDOW_MS
    # Windows 0-7 close (the last items are 2 s of event time past window 7); 8-10 stay open.
    plan = [(1, 10)] * 6 + [(9, 10)] * 4 + [(1, 10)]
    items = items_for(base, {"ACME": plan})
    key = {"dimension": "entity", "key": "ACME"}
    trends = TopicReader(kafka.bootstrap, topics.trends)
    worker = WorkerProcess(kafka, topics, tiny, tmp_path, app_id=app_id, env=env).start()
    try:
        produce(kafka.bootstrap, topics.news, items, partition=0, pace_every=10, pace_s=0.25)
        assert wait_until(lambda: worker.metric("finsent_surge_active", key) == 1, 120), worker.log_tail()
        closed = entity_records(trends.wait_for(lambda v: len(entity_records(v, "ACME")) >= 8, 60), "ACME")
        assert len(closed) == 8, closed
        share = worker.metric("finsent_negative_share", key)
        worker.stop()
        worker = WorkerProcess(kafka, topics, tiny, tmp_path, app_id=app_id, env=env).start()
        started = time.monotonic()
        restored = wait_until(lambda: worker.metric("finsent_surge_active", key) == 1, 60)
        restored_s = time.monotonic() - started
        assert restored, worker.log_tail()
        assert worker.metric("finsent_negative_share", key) == share == 0.9
        assert worker.metric("finsent_window_count", key) == 10
        assert len(entity_records(trends.wait_for(lambda v: False, 2), "ACME")) == 8, "no window closed since"
        print(
            f"\nFAULT restart-gauges: SIGTERM while ACME's surge fired; after the restart finsent_surge_active "
            f"was 1 and the last-window gauges were back (negative share {share}) {restored_s:.1f} s after the "
            f"worker was ready, with no window of ACME closed since"
        )
    finally:
        trends.close()
        worker.stop()
