"""Where an output record goes: Faust's topic (at-least-once) or its input partition's transaction (exactly-once)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from monitor.stream.metrics import Metrics
from monitor.stream.outputs import Outputs


class Channel:
    """Stands in for a Faust topic: records what it was asked to send."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[dict[str, Any]] = []

    def get_topic_name(self) -> str:
        return self.name

    async def send(self, **kwargs: Any) -> str:
        self.sent.append(kwargs)
        return "future"


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    async def send(self, *args: Any, transactional_id: str | None = None) -> str:
        self.sent.append((*args, transactional_id))
        return "future"


def outputs(**kw: Any) -> Outputs:
    ch = {n: Channel(n) for n in ("scored", "trends", "alerts", "dead", "events")}
    return Outputs(ch["scored"], ch["trends"], ch["alerts"], ch["dead"], ch["events"], Metrics(), 1.0, **kw)


def test_at_least_once_sends_through_the_topic() -> None:
    out = outputs()
    assert asyncio.run(out.send(out.scored, key=b"k", value={"a": 1}, source=("news", 2))) == "future"
    assert out.scored.sent == [{"key": b"k", "value": {"a": 1}, "force": True}]


def test_exactly_once_sends_into_the_transaction_of_the_input_partition() -> None:
    producer = Producer()
    out = outputs(transaction_of=lambda topic, p: f"app-{topic}-{p}", producer=producer)
    asyncio.run(out.send(out.scored, key=b"k", value={"a": "é"}, source=("news", 2)))
    asyncio.run(out.send(out.alerts, value={"s": 1}, source=("events", 0)))
    (topic, key, value, partition, ts, headers, tid), (topic2, key2, _, _, _, _, tid2) = producer.sent
    assert (topic, key, partition, ts, headers, tid) == ("scored", b"k", None, None, None, "app-news-2")
    assert json.loads(value) == {"a": "é"}  # the JSON the at-least-once path's serializer writes
    assert (topic2, key2, tid2) == ("alerts", None, "app-events-0")
    assert out.scored.sent == [] and out.alerts.sent == []  # nothing went around the transaction
