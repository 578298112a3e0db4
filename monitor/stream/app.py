"""The Faust app: topics, the table, two agents and three timers; the work is in the stages.

* `score` (monitor/stream/scoring.py) consumes the input topics and writes
  scored items and trend events;
* `aggregate` (monitor/stream/aggregation.py) consumes the trend events,
  keeps each key's windows and surge state in a table, and writes trend
  windows and alerts.

Outputs are sent immediately (`force=True`) and confirmed before their
input is acked; Faust flushes the producer before each offset commit, so
the default guarantee is at-least-once. With `processing_guarantee =
"exactly_once"` Faust sends through one transactional producer per input
partition and commits outputs and offsets together (docs/BROKERS.md).
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from pathlib import Path
from typing import Any, cast

import faust
from faust.types import TP
from mode.types.signals import SignalHandlerT

from monitor.core import entities as ent
from monitor.model.service import ModelService
from monitor.settings import Settings
from monitor.stream import faust_fixes, store
from monitor.stream.aggregation import AggregateConfig, AggregateStage
from monitor.stream.clients import faust_broker_kwargs
from monitor.stream.lag import measure_lag
from monitor.stream.metrics import Metrics
from monitor.stream.outputs import Outputs, now_ms
from monitor.stream.scoring import ScoreStage
from monitor.stream.stall import StallWatch

log = logging.getLogger(__name__)

TABLE_NAME = "windows"
RECOVERY_BATCH = 50


class Pipeline:
    """What one worker process shares between its agents: the model in service, metrics, the watchlist."""

    def __init__(self, settings: Settings, models: ModelService, metrics: Metrics) -> None:
        self.models = models
        self.metrics = metrics
        wl = settings.worker.watchlist
        self.watchlist = ent.Watchlist.from_file(wl) if wl else ent.default_watchlist()
        metrics.set_entity_policy(self.watchlist.contains, settings.worker.max_metric_entities)
        ident = models.scorer.ident
        metrics.set_model(ident["name"], ident["version"], ident["sha256"])


def make_faust_app(settings: Settings) -> faust.App:
    t, w = settings.topics, settings.worker
    return faust.App(
        w.app_id,
        store=w.store,
        datadir=str(Path(w.datadir)),
        topic_partitions=t.partitions,
        topic_replication_factor=t.replication_factor,
        processing_guarantee=w.processing_guarantee,
        consumer_group_instance_id=w.group_instance_id,
        table_standby_replicas=0,
        broker_commit_interval=w.commit_interval_s,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        web_bind="127.0.0.1",
        web_port=w.web_port,
        web_in_thread=False,
        # Trend events are acked at the next tick's flush; do not hold a rebalance for them.
        stream_wait_empty=False,
        **faust_broker_kwargs(settings),
    )


def declare_outputs(app: faust.App, settings: Settings, metrics: Metrics) -> Outputs:
    t = settings.topics
    # Every output: raw bytes keys, JSON values.
    return Outputs(
        scored=app.topic(t.scored, key_serializer="raw", value_serializer="json"),
        trends=app.topic(t.trends, key_serializer="raw", value_serializer="json"),
        alerts=app.topic(t.alerts, key_serializer="raw", value_serializer="json"),
        deadletter=app.topic(t.deadletter, key_serializer="raw", value_serializer="json"),
        events=app.topic(
            t.trend_events, key_type=bytes, partitions=t.partitions, key_serializer="raw", value_serializer="json"
        ),
        metrics=metrics,
        send_retry_s=settings.worker.send_retry_s,
        transaction_of=partial(transactional_id, app)
        if settings.worker.processing_guarantee == "exactly_once"
        else None,
        producer=app.producer,
    )


def table_store(settings: Settings) -> str:
    """The window table's store URL: "memory://" means the kept variant under at-least-once (store.py)."""
    w = settings.worker
    if w.store == "memory://" and w.processing_guarantee == "at_least_once":
        store.register()
        return store.URL
    return w.store


def transactional_id(app: faust.App, topic: str, partition: int) -> str:
    """The id of the transaction Faust commits an input partition's offsets in (its TransactionManager's format)."""
    return f"{app.conf.id}-{app.assignor.group_for_topic(topic)}-{partition}"


def create_app(settings: Settings, pipeline: Pipeline) -> faust.App:
    faust_fixes.install()  # consumer bugs that lose input records (monitor/stream/faust_fixes.py)
    t = settings.topics
    app = make_faust_app(settings)
    metrics = pipeline.metrics
    out = declare_outputs(app, settings, metrics)
    inputs = app.topic(*t.inputs, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    table = app.Table(
        TABLE_NAME, default=None, partitions=t.partitions, key_type=str, value_type=None,
        store=table_store(settings),
        # A key's state is tens of KB: apply a restored changelog in small batches, not 1,000 at a time.
        recovery_buffer_size=RECOVERY_BATCH,
    )  # fmt: skip
    scoring = ScoreStage(
        pipeline.models, out, pipeline.watchlist,
        batch_size=settings.model.batch_size, max_wait_s=settings.model.max_wait_ms / 1000,
        max_message_bytes=settings.worker.max_message_bytes, overlap_io=settings.worker.overlap_io,
    )  # fmt: skip
    cfg = AggregateConfig(
        windows=settings.windows.to_config(),
        surge=settings.surge.to_config(),
        idle_ms=int(settings.windows.idle_s * 1000),
        fence=settings.kafka.embedded,
    )
    aggregation = AggregateStage(table, out, cfg, flush=lambda: app.producer.flush())

    stalls = StallWatch()

    @app.agent(inputs)
    async def score(stream: faust.StreamT) -> None:
        await scoring.run(stream)

    @app.agent(out.events)
    async def aggregate(stream: faust.StreamT) -> None:
        await aggregation.run(stream)

    async def forget_revoked(app_: Any, revoked: set[TP], **kwargs: Any) -> None:
        aggregation.forget(tp.partition for tp in revoked if tp.topic == t.trend_events)
        for tp in revoked:
            stalls.forget(tp)

    # The signal sends (app, revoked, signal=...); mode's SignalHandlerT cannot spell a handler
    # with a fixed positional payload, so it wants one that takes any positionals.
    app.on_partitions_revoked.connect(cast(SignalHandlerT, forget_revoked))

    async def own_assigned(app_: Any, assigned: set[TP], **kwargs: Any) -> None:
        aggregation.own(tp.partition for tp in assigned if tp.topic == t.trend_events)
        metrics.keep_lag((tp.topic, tp.partition) for tp in assigned)

    app.on_partitions_assigned.connect(cast(SignalHandlerT, own_assigned))
    # Called once the changelog is read into the table, before the streams resume.
    table.on_recover(aggregation.restore_gauges)

    @app.timer(settings.windows.tick_interval_s)
    async def tick() -> None:
        stamp = {"tick": now_ms()}
        for p in range(t.partitions):
            await out.events.send(value=stamp, partition=p, force=True)

    @app.timer(max(0.5, settings.model.reload_interval_s))
    async def housekeeping() -> None:
        await reload_model(pipeline)

    @app.timer(1.0)
    async def report_lag() -> None:
        await measure_lag(app, metrics, set(t.inputs), stalls)

    return app


async def reload_model(pipeline: Pipeline) -> None:
    """Swap in a changed bundle; a timer that raised would crash the whole app, so nothing escapes."""
    models, metrics = pipeline.models, pipeline.metrics
    try:
        swapped = await asyncio.get_running_loop().run_in_executor(None, models.maybe_reload)
    except Exception:
        log.exception("model reload check failed; the model in service is unchanged")
        return
    if swapped is not None:
        metrics.model_reloads.labels("swapped" if swapped else "refused").inc()
        if swapped:
            ident = models.scorer.ident
            metrics.set_model(ident["name"], ident["version"], ident["sha256"])
