"""The aggregate stage's failure rule, driven directly: retry, then dead-letter with a reason and a metric.

Unit tests with in-memory topics and table; the same rule against a real
worker and broker is tests/test_worker_integration.py::test_bad_trend_event_is_dead_lettered.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from monitor.core import windows as win
from monitor.core.surge import SurgeConfig
from monitor.stream.aggregation import ATTEMPTS, AggregateConfig, AggregateStage, KeyState
from monitor.stream.metrics import Metrics
from monitor.stream.outputs import Outputs


@dataclass
class FakeTopic:
    sent: list[dict[str, Any]] = field(default_factory=list)

    def get_topic_name(self) -> str:
        return "events"

    async def send(self, **kw: Any) -> asyncio.Future[None]:
        self.sent.append(kw)
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


@dataclass
class FakeStream:
    acked: list[Any] = field(default_factory=list)

    async def ack(self, event: Any) -> None:
        self.acked.append(event)


def stage(table: dict[str, Any] | None = None) -> tuple[AggregateStage, Outputs]:
    out = Outputs(
        scored=FakeTopic(), trends=FakeTopic(), alerts=FakeTopic(), deadletter=FakeTopic(), events=FakeTopic(),
        metrics=Metrics(), send_retry_s=0.0,
    )  # fmt: skip
    cfg = AggregateConfig(
        windows=win.WindowConfig(size_ms=1000, allowed_lateness_ms=0), surge=SurgeConfig(), idle_ms=1000
    )

    async def flush() -> None:
        return None

    return AggregateStage({} if table is None else table, out, cfg, flush), out


def event(value: Any, key: bytes = b"entity:ACME", offset: int = 7) -> Any:
    msg = SimpleNamespace(topic="events", partition=0, offset=offset, key=key, timestamp=None)
    return SimpleNamespace(message=msg, value=value)


def later(minutes: int) -> int:
    """A tick stamp well past the idle time: the watermark moves on with the wall clock and windows close."""
    return int(time.time() * 1000) + minutes * 60_000


def counter(out: Outputs, step: str) -> float:
    return out.metrics.registry.get_sample_value("finsent_aggregation_failures_total", {"step": step}) or 0.0


def test_key_state_round_trips_through_the_table_form() -> None:
    s = KeyState(2, {"open": {}}, {"last_end": 5})
    assert KeyState.from_stored(s.stored(), 0) == s
    assert KeyState.from_stored(None, 3) == KeyState(3)


def test_a_trend_event_that_cannot_be_counted_is_dead_lettered_not_dropped() -> None:
    agg, out = stage()
    stream = FakeStream()
    bad = event({"id": "x", "sentiment": "negative"})  # no event_ms
    asyncio.run(agg.on_event(bad, stream))
    [dead] = [s["value"] for s in out.deadletter.sent]
    assert dead["error"] == "aggregation_error" and "event_ms" in dead["detail"]
    assert dead["origin"]["topic"] == "events" and json.loads(dead["raw"])["id"] == "x"
    assert stream.acked == [bad] and counter(out, "event") == 1
    assert not agg.held[0]  # nothing waits for a table write that will never come


def test_a_good_trend_event_is_held_until_the_tick_persists_it() -> None:
    agg, out = stage()
    stream = FakeStream()
    good = event({"id": "a", "event_ms": 1500, "sentiment": "negative", "score": -0.9})
    asyncio.run(agg.on_event(good, stream))
    assert agg.held[0] == [good] and not stream.acked
    asyncio.run(agg.on_tick(0, later(1), good.message, stream))
    assert stream.acked == [good] and KeyState.from_stored(agg.table["entity:ACME"], 0).windows is not None
    assert [t["value"]["count"] for t in out.trends.sent] == [1] and not out.deadletter.sent


def test_a_key_that_keeps_failing_to_close_is_retried_then_dead_lettered_and_reset() -> None:
    broken = KeyState(0, windows={"open": "not a dict"}).stored()  # what a corrupt state looks like
    agg, out = stage({"entity:BAD": broken, "entity:OK": KeyState(0).stored()})
    stream = FakeStream()
    tick = event({"tick": 1}).message
    for n in range(1, ATTEMPTS):
        asyncio.run(agg.on_tick(0, later(n), tick, stream))
        assert counter(out, "close") == n and not out.deadletter.sent  # retried on the next tick
    asyncio.run(agg.on_tick(0, later(ATTEMPTS), tick, stream))
    [dead] = [s["value"] for s in out.deadletter.sent]
    assert dead["error"] == "aggregation_error" and "entity:BAD" in dead["detail"]
    assert json.loads(dead["raw"])["state"] == broken
    assert agg.table["entity:BAD"] == KeyState(0).stored()  # starts over instead of failing forever
    asyncio.run(agg.on_tick(0, later(ATTEMPTS + 1), tick, stream))
    assert counter(out, "close") == ATTEMPTS
