"""The worker's output topics and the one way every stage writes a dead letter."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

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
            lambda: self.deadletter.send(value=record, force=True), what=f"dead letter for {msg.topic}@{msg.offset}"
        )
        self.metrics.invalid.labels(reason).inc()
        self.metrics.deadletter.labels(reason).inc()
