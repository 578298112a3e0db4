"""Consumer lag of the input partitions, and restarting one whose fetching stalled (monitor/stream/stall.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust
from faust.types import TP

from monitor.stream.metrics import Metrics
from monitor.stream.stall import StallWatch

log = logging.getLogger(__name__)


async def measure_lag(app: faust.App, metrics: Metrics, inputs: set[str], watch: StallWatch) -> None:
    """Consumer lag per input partition; a partition whose fetching stalled is restarted (stream/stall.py)."""
    metrics.loop_tasks.set(len(asyncio.all_tasks()))
    consumer = app.consumer
    for tp in list(consumer.assignment()):
        if tp.topic not in inputs:
            continue
        try:
            high = consumer.highwater(tp)
            pos = await consumer.position(TP(tp.topic, tp.partition))
        except Exception as exc:
            log.debug("lag of %s not known now: %r", tp, exc)
            continue
        # A rebalance during the await may have taken the partition away, and its series with it.
        if pos is None or tp not in consumer.assignment():
            continue
        if high is not None:
            metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, high - pos))
        if watch.still(tp, pos, time.monotonic()) >= watch.after_s:
            await restart_if_stalled(consumer, metrics, watch, tp, pos, high)


async def restart_if_stalled(
    consumer: Any, metrics: Metrics, watch: StallWatch, tp: TP, pos: int, high: int | None
) -> None:
    if high is None or high <= pos:  # the fetcher may never have heard of this partition's end: ask
        try:
            high = (await consumer.highwaters(tp)).get(tp)
        except Exception as exc:
            log.debug("end offset of %s not known now: %r", tp, exc)
            return
    if watch.stalled(tp, pos, high, time.monotonic()):
        log.warning("no record of %s fetched for %.0f s although %s wait: fetching it afresh from offset %d",
                    tp, watch.after_s, (high or 0) - pos, pos)  # fmt: skip
        metrics.fetch_restarts.labels(tp.topic).inc()
        await consumer.seek(tp, pos)
