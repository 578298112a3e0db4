"""The worker's output topics, the one way every stage sends to them, and dead letters.

Under exactly-once processing every output goes into the Kafka transaction of
the input partition it came from, the transaction that also commits that
partition's offsets: outputs and offsets become visible together or not at
all. Faust's own routing cannot do this for topics the app does not consume
(scored, trends, alerts, dead letters): it finds no partition metadata for
them and sends outside any transaction, and for the topics it can route it
picks the transaction of the *destination* partition (docs/BROKERS.md).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from faust.serializers import codecs

from monitor.core import validate as val
from monitor.stream.metrics import Metrics
from monitor.stream.outbox import Outbox


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Outputs:
    """Faust topics the stages write to, and the outbox settings every unit of work shares."""

    scored: Any
    trends: Any
    alerts: Any
    deadletter: Any
    events: Any
    metrics: Metrics
    send_retry_s: float
    # Exactly-once only: (input topic, partition) -> its transactional id, and Faust's producer.
    transaction_of: Callable[[str, int], str] | None = None
    producer: Any = None

    def send(
        self, channel: Any, *, value: Any, source: tuple[str, int], key: bytes | None = None
    ) -> Awaitable[Awaitable[Any]]:
        """Hand one record to the producer; returns what the outbox awaits (the delivery future).

        `source`: the input topic and partition whose processing produced the record.
        """
        if self.transaction_of is None:
            return channel.send(key=key, value=value, force=True)
        return self.producer.send(
            channel.get_topic_name(), key, codecs.dumps("json", value), None, None, None,
            transactional_id=self.transaction_of(*source),
        )  # fmt: skip

    def outbox(self) -> Outbox:
        return Outbox(retry_s=self.send_retry_s, on_retry=self.metrics.send_retries.inc)

    async def dead(self, raw_value: bytes | None, reason: str, detail: str, msg: Any, box: Outbox) -> None:
        """Dead-letter one input message with its reason; counted by reason."""
        record = val.dead_letter_record(
            raw_value,
            val.Invalid(reason, detail),
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            kafka_ts_ms=int(msg.timestamp * 1000) if msg.timestamp else None,
            now_ms=now_ms(),
        )
        await box.send(
            lambda: self.send(self.deadletter, value=record, source=(msg.topic, msg.partition)),
            what=f"dead letter for {msg.topic}@{msg.offset}",
        )
        self.metrics.invalid.labels(reason).inc()
        self.metrics.deadletter.labels(reason).inc()
