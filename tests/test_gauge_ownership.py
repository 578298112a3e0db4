"""Per-key gauges follow partition ownership: dropped when a partition moves away, set from the table when one arrives.

Unit tests of the pure parts (`series_of`, `SeriesOwners`) and of the
aggregate stage with an in-memory table, no Faust. The same behaviour
between real workers is tests/test_two_workers.py.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from monitor.core import windows as win
from monitor.core.surge import SurgeConfig
from monitor.stream.aggregation import AggregateConfig, AggregateStage, KeySeries, KeyState, series_of
from monitor.stream.metrics import Metrics, SeriesOwners
from monitor.stream.outputs import Outputs

GAUGES = (
    "finsent_negative_share",
    "finsent_sentiment_mean",
    "finsent_window_count",
    "finsent_surge_zscore",
    "finsent_baseline_negative_share",
    "finsent_window_end_timestamp_seconds",
)
LAST = {"share": 0.9, "mean": -0.7, "count": 10, "z": 4.2, "base": 0.12, "end": 1_700_000_060.0}


@dataclass
class FakeTopic:
    sent: list[dict[str, Any]] = field(default_factory=list)

    async def send(self, **kw: Any) -> asyncio.Future[None]:
        self.sent.append(kw)
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    def get_topic_name(self) -> str:
        return "events"


@dataclass
class FakeStream:
    acked: list[Any] = field(default_factory=list)

    async def ack(self, event: Any) -> None:
        self.acked.append(event)


def stage(table: dict[str, Any], metrics: Metrics | None = None) -> AggregateStage:
    out = Outputs(
        scored=FakeTopic(), trends=FakeTopic(), alerts=FakeTopic(), deadletter=FakeTopic(), events=FakeTopic(),
        metrics=metrics or Metrics(), send_retry_s=0.0,
    )  # fmt: skip
    cfg = AggregateConfig(
        windows=win.WindowConfig(size_ms=1000, allowed_lateness_ms=0), surge=SurgeConfig(), idle_ms=1000
    )

    async def flush() -> None:
        return None

    return AggregateStage(table, out, cfg, flush)


def firing(severity: str = "critical", derived_from: str | None = None) -> dict[str, Any]:
    return {"firing": {"alert_id": "x", "started_at": 0, "severity": severity, "derived_from": derived_from}}


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def keys_of(m: Metrics, name: str = "finsent_negative_share") -> set[tuple[str, str]]:
    return {
        (s.labels["dimension"], s.labels["key"])
        for family in m.registry.collect()
        for s in family.samples
        if s.name == name
    }


def test_a_stored_state_says_which_gauges_to_set() -> None:
    assert series_of("__fence__", {"at": 5}) is None  # the embedded broker's fence record is no key
    assert series_of("entity:ACME", "not a dict") is None
    assert series_of("entity:ACME", {"p": 2, "w": None, "s": None}) == KeySeries("entity", "ACME", 2, None, None)
    got = series_of("topic:Earnings", {"p": 1, "w": None, "s": firing("warning", "entity:ACME"), "g": LAST})
    assert got == KeySeries("topic", "Earnings", 1, LAST, "warning", "entity:ACME")
    resolved = {"p": 1, "s": {"firing": None, "calm": 0}, "g": {**LAST, "z": "NaN?"}}  # a damaged gauge record
    assert series_of("all:all", resolved) == KeySeries("all", "all", 1, None, None)


def test_key_state_keeps_the_last_window_gauges_and_reads_state_without_them() -> None:
    s = KeyState(2, {"open": {}}, {"last_end": 5}, dict(LAST))
    assert KeyState.from_stored(s.stored(), 0) == s
    assert "g" not in KeyState(2).stored()  # state as written before gauges were kept
    assert KeyState.from_stored({"p": 1, "w": None, "s": None}, 0) == KeyState(1)


def test_a_series_shared_by_partitions_goes_with_the_last_of_them() -> None:
    owners = SeriesOwners()
    owners.note(0, ("entity", "ACME"))
    owners.note(0, ("entity", "other"))
    owners.note(1, ("entity", "other"))
    owners.note(1, ("topic", "Earnings"))
    assert owners.release([0]) == {("entity", "ACME")}  # "other" is still published by partition 1
    assert owners.partitions() == {1}
    assert owners.release([1, 3]) == {("entity", "other"), ("topic", "Earnings")}
    assert owners.release([1]) == set()


def test_gauges_are_set_from_the_table_for_owned_partitions_only() -> None:
    table = {
        "entity:ACME": {"p": 0, "w": None, "s": firing("critical"), "g": LAST},
        "topic:Earnings": {"p": 0, "w": None, "s": firing("warning", "entity:ACME"), "g": LAST},
        "entity:MOVED": {"p": 3, "w": None, "s": firing(), "g": LAST},  # another worker's partition
        "entity:YOUNG": {"p": 0, "w": {"open": {}}, "s": None},  # no window closed yet: nothing to show
        "__fence__": {"at": 1},
    }
    agg = stage(table)
    m = agg.metrics
    agg.own([0, 1])
    asyncio.run(agg.restore_gauges())
    assert value(m, "finsent_surge_active", dimension="entity", key="ACME", severity="critical") == 1
    assert value(m, "finsent_surge_incident", dimension="entity", key="ACME", incident="ACME") == 1
    assert value(m, "finsent_surge_incident", dimension="topic", key="Earnings", incident="ACME") == 1
    assert value(m, "finsent_negative_share", dimension="entity", key="ACME") == LAST["share"]
    assert value(m, "finsent_window_end_timestamp_seconds", dimension="topic", key="Earnings") == LAST["end"]
    assert value(m, "finsent_window_count", dimension="entity", key="ACME") == LAST["count"]
    assert keys_of(m) == {("entity", "ACME"), ("topic", "Earnings")}
    assert keys_of(m, "finsent_surge_active") == {("entity", "ACME"), ("topic", "Earnings")}


def test_a_partition_that_moves_away_takes_its_series_with_it() -> None:
    table = {
        "entity:ACME": {"p": 0, "w": None, "s": firing("critical"), "g": LAST},
        "entity:KEEP": {"p": 1, "w": None, "s": firing("warning"), "g": LAST},
    }
    agg = stage(table)
    m = agg.metrics
    agg.own([0, 1])
    asyncio.run(agg.restore_gauges())
    agg.watermark(0)
    agg.own([1])  # a second worker took partition 0
    assert keys_of(m) == {("entity", "KEEP")}
    for name in ("finsent_surge_active", "finsent_surge_incident", "finsent_surge_zscore", "finsent_window_count",
                 "finsent_baseline_negative_share", "finsent_sentiment_mean", "finsent_window_end_timestamp_seconds"):  # fmt: skip
        assert ("entity", "ACME") not in keys_of(m, name), name
    assert value(m, "finsent_surge_active", dimension="entity", key="KEEP", severity="warning") == 1
    assert 0 not in agg.watermarks  # taken back later, it starts with a fresh idle clock


def test_a_folded_label_stays_while_an_owned_partition_published_it() -> None:
    m = Metrics()
    m.set_entity_policy(lambda _k: False, 0)  # every company folds into "other"
    table = {
        "entity:AAA": {"p": 0, "w": None, "s": None, "g": LAST},
        "entity:BBB": {"p": 1, "w": None, "s": None, "g": LAST},
    }
    agg = stage(table, m)
    agg.own([0, 1])
    asyncio.run(agg.restore_gauges())
    assert keys_of(m) == {("entity", "other")}
    agg.own([1])
    assert keys_of(m) == {("entity", "other")}  # BBB in partition 1 still publishes it
    agg.own([])
    assert keys_of(m) == set()


def test_a_tick_of_a_partition_no_longer_owned_publishes_nothing() -> None:
    agg = stage({})
    stream = FakeStream()
    msg = SimpleNamespace(topic="events", partition=0, offset=1, key=b"entity:ACME", timestamp=None)
    ev = SimpleNamespace(message=msg, value={"id": "a", "event_ms": 1500, "sentiment": "negative", "score": -0.9})
    agg.own([0])
    asyncio.run(agg.on_event(ev, stream))
    agg.own([1])  # the rebalance lands while partition 0's tick is still running
    asyncio.run(agg.on_tick(0, int(time.time() * 1000) + 60_000, msg, stream))
    assert [t["value"]["count"] for t in agg.out.trends.sent] == [1]  # the window itself still goes out
    assert keys_of(agg.metrics) == set()


def test_a_new_owner_exports_the_gauges_the_old_one_last_set() -> None:
    """The table a closed window leaves behind gives another worker (or a restart) the same gauges."""
    table: dict[str, Any] = {}
    first = stage(table)
    stream = FakeStream()
    msg = SimpleNamespace(topic="events", partition=2, offset=1, key=b"entity:ACME", timestamp=None)
    for i, sentiment in enumerate(("negative", "negative", "neutral")):
        ev = SimpleNamespace(message=msg, value={"id": str(i), "event_ms": 1500, "sentiment": sentiment, "score": 0})
        asyncio.run(first.on_event(ev, stream))
    asyncio.run(first.on_tick(2, int(time.time() * 1000) + 60_000, msg, stream))
    before = {n: value(first.metrics, n, dimension="entity", key="ACME") for n in GAUGES}
    assert before["finsent_window_count"] == 3 and before["finsent_negative_share"] == 2 / 3
    second = stage(table)
    second.own([2])
    asyncio.run(second.restore_gauges())
    assert {n: value(second.metrics, n, dimension="entity", key="ACME") for n in GAUGES} == before


def test_consumer_lag_is_kept_for_assigned_partitions_only() -> None:
    m = Metrics()
    for p in range(4):
        m.consumer_lag.labels("news", str(p)).set(p)
    m.consumer_lag.labels("comments", "0").set(9)
    m.keep_lag([("news", 1), ("news", 3), ("comments", 0), ("events", 1)])
    lag = {(s.labels["topic"], s.labels["partition"]) for f in m.consumer_lag.collect() for s in f.samples}
    assert lag == {("news", "1"), ("news", "3"), ("comments", "0")}


def test_a_partition_taken_back_starts_with_a_fresh_watermark() -> None:
    """A watermark from an earlier ownership would close the windows of the backlog the partition brings back.

    Before any item a partition's watermark follows the wall clock after its
    idle grace; items minutes old (a backfill, a worker catching up) then sit
    behind it. Kept across a stretch of another worker's ownership, it would
    close the windows that worker left open on the first tick of the backlog
    and count the rest of their items as late.
    """
    table: dict[str, Any] = {}
    agg, other = stage(table), stage(table)
    stream = FakeStream()
    now = int(time.time() * 1000)
    msg = SimpleNamespace(topic="events", partition=0, offset=1, key=b"entity:ACME", timestamp=None)

    def item(i: str) -> Any:
        return SimpleNamespace(
            message=msg, value={"id": i, "event_ms": now - 60_000, "sentiment": "neutral", "score": 0}
        )

    agg.own([0])
    asyncio.run(agg.on_tick(0, now + 5_000, msg, stream))  # no item yet: past the grace, it follows the clock
    agg.own([1])  # the other worker takes partition 0 and counts an item of a window it leaves open
    other.own([0])
    asyncio.run(other.on_event(item("a"), stream))
    asyncio.run(other.on_tick(0, int(time.time() * 1000), msg, stream))
    assert not other.out.trends.sent
    agg.own([0, 1])  # taken back: a tick of the backlog first, then the window's second item
    asyncio.run(agg.on_tick(0, int(time.time() * 1000), msg, stream))
    asyncio.run(agg.on_event(item("b"), stream))
    asyncio.run(agg.on_tick(0, int(time.time() * 1000) + 60_000, msg, stream))
    assert [(t["value"]["count"], t["value"]["late_count"]) for t in agg.out.trends.sent] == [(2, 0)]
