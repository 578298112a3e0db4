"""The Faust worker: thin wiring of Kafka topics to the plain functions.

Two agents:

* `score` consumes the input topics (raw bytes), validates, scores in
  micro-batches (`take_events`: up to batch_size events or what arrived
  within max_wait, one forward pass in a thread off the event loop), writes
  the scored item and one trend event per `dimension:key` it counts
  towards to an internal topic keyed by `dimension:key`. That topic is the
  repartition step (an item fans out to several keys, which `group_by`
  cannot express), so every key's windows live on exactly one worker.
* `aggregate` consumes the trend events and keeps each key's windows,
  baseline and surge state in a changelog-backed table. A timer sends a
  tick to every partition; on a tick the agent closes due windows of the
  keys in that partition (table writes must happen inside that
  partition's stream so the changelog stays co-partitioned), emits trend
  windows and alerts, and updates the gauges.

Outputs are sent immediately (`force=True`); Faust flushes the producer
before each offset commit, so the guarantee is at-least-once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import faust
from faust.types import TP

from monitor import entities as ent
from monitor import surge as surge_mod
from monitor import validate as val
from monitor import windows as win
from monitor.metrics import Metrics
from monitor.model_service import ModelService
from monitor.outbox import Outbox
from monitor.records import key_of, scored_record, trend_event, trend_keys
from monitor.scorer import TaskScore, model_text
from monitor.settings import Settings

log = logging.getLogger(__name__)

TABLE_NAME = "windows"


def now_ms() -> int:
    return int(time.time() * 1000)


def faust_broker_kwargs(settings: Settings) -> dict[str, Any]:
    k = settings.kafka
    urls = ";".join(f"kafka://{h.strip()}" for h in k.bootstrap.split(",") if h.strip())
    kw: dict[str, Any] = {"broker": urls}
    if k.security_protocol.startswith("SASL"):
        assert k.sasl_password is not None
        kw["broker_credentials"] = faust.SASLCredentials(
            username=k.sasl_username,
            password=k.sasl_password.get_secret_value(),
            mechanism=k.sasl_mechanism,
            ssl_context=k.ssl_context(),
        )
    elif k.security_protocol == "SSL":
        kw["broker_credentials"] = faust.SSLCredentials(k.ssl_context())
    session = k.session_timeout
    kw["broker_session_timeout"] = session
    kw["broker_heartbeat_interval"] = max(0.2, session / 4)
    return kw


FENCE_KEY = "__fence__"


class Pipeline:
    """Per-process state shared by the agents: model, scoring thread, metrics, watchlist."""

    def __init__(self, settings: Settings, models: ModelService, metrics: Metrics) -> None:
        self.settings = settings
        self.models = models
        self.metrics = metrics
        wl = settings.worker.watchlist
        self.watchlist = ent.Watchlist.from_file(wl) if wl else ent.default_watchlist()
        metrics.set_entity_policy(self.watchlist.contains, settings.worker.max_metric_entities)
        self.executor = models.executor  # the scoring thread (monitor/model_service.py)
        w = settings.windows
        self.window_cfg = win.WindowConfig(
            size_ms=int(w.size_s * 1000),
            allowed_lateness_ms=int(w.allowed_lateness_s * 1000),
            evidence_size=w.evidence_size,
        )
        self.surge_cfg = settings.surge.to_config()
        self.watermarks: dict[int, win.Watermark] = {}
        ident = models.scorer.ident
        metrics.set_model(ident["name"], ident["version"], ident["sha256"])

    def watermark(self, partition: int) -> win.Watermark:
        wm = self.watermarks.get(partition)
        if wm is None:
            wm = self.watermarks[partition] = win.Watermark(
                idle_ms=int(self.settings.windows.idle_s * 1000), started_ms=now_ms()
            )
        return wm


def create_app(settings: Settings, pipeline: Pipeline) -> faust.App:
    t = settings.topics
    w = settings.worker
    datadir = Path(w.datadir)
    app = faust.App(
        w.app_id,
        store=w.store,
        datadir=str(datadir),
        topic_partitions=t.partitions,
        topic_replication_factor=t.replication_factor,
        processing_guarantee="at_least_once",
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
    metrics = pipeline.metrics
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    inputs = app.topic(*t.inputs, **raw)
    scored = app.topic(t.scored, key_serializer="raw", value_serializer="json")
    trends = app.topic(t.trends, key_serializer="raw", value_serializer="json")
    alerts = app.topic(t.alerts, key_serializer="raw", value_serializer="json")
    deadletter = app.topic(t.deadletter, key_serializer="raw", value_serializer="json")
    events = app.topic(
        t.trend_events, key_type=bytes, key_serializer="raw", value_serializer="json", partitions=t.partitions
    )
    table = app.Table(TABLE_NAME, default=None, partitions=t.partitions, key_type=str, value_type=None)

    def outbox() -> Outbox:
        return Outbox(retry_s=w.send_retry_s, on_retry=metrics.send_retries.inc)

    async def dead(raw_value: bytes | None, reason: str, detail: str, msg: Any, box: Outbox) -> None:
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
            lambda: deadletter.send(value=record, force=True), what=f"dead letter for {msg.topic}@{msg.offset}"
        )
        metrics.invalid.labels(reason).inc()
        metrics.deadletter.labels(reason).inc()

    async def finish_item(msg: Any, item: val.Item, scores: dict[str, TaskScore], box: Outbox, origin: int) -> None:
        kafka_ts = int(msg.timestamp * 1000) if msg.timestamp else None
        scorer = pipeline.models.scorer
        found = ent.extract_entities(
            f"{item.title or ''} {item.text[: scorer.max_length * 16]}", item.tickers, pipeline.watchlist
        )
        event_ms, source = val.event_time_ms(item, kafka_ts, now_ms())
        done = now_ms()
        record = scored_record(
            item.to_dict(), scores, found, scorer.ident,
            event_ms=event_ms, event_time_source=source, scored_at_ms=done, stream=msg.topic,
        )  # fmt: skip
        # Trend events first, the scored item last: once a consumer sees the scored
        # item, everything it feeds into has been handed to the producer.
        for dim, key in trend_keys(record):
            ek, ev = key_of(dim, key).encode(), trend_event(record, dim, key)
            await box.send(lambda ek=ek, ev=ev: events.send(key=ek, value=ev, force=True), origin, "a trend event")
        sk = str(item.id).encode()
        await box.send(lambda: scored.send(key=sk, value=record, force=True), origin, f"scored item {item.id}")
        topic_label = record.get("topic", {}).get("label", "none")
        metrics.messages.labels(msg.topic, topic_label, record["sentiment"]["label"]).inc()
        if kafka_ts:
            metrics.lag.observe(max(0.0, (done - kafka_ts) / 1000))
        metrics.last_scored.set(done / 1000)

    async def prepare(batch: list[Any]) -> tuple[Outbox, list[tuple[Any, val.Item]], list[dict[str, TaskScore]]]:
        """Validate every event (bad ones to the dead-letter box), score the valid ones in one model call.

        Tokenising and the forward pass both run in the scoring thread, off the event loop.
        """
        box = outbox()
        valid: list[tuple[Any, val.Item]] = []
        for event in batch:
            msg = event.message
            kafka_ts = int(msg.timestamp * 1000) if msg.timestamp else None
            try:
                result = val.validate(msg.value, kafka_ts_ms=kafka_ts, max_bytes=w.max_message_bytes, now_ms=now_ms())
            except Exception as exc:
                result = val.Invalid("processing_error", f"{type(exc).__name__}: {exc}"[:500])
            if isinstance(result, val.Invalid):
                await dead(msg.value, result.reason, result.detail, msg, box)
            else:
                valid.append((msg, result))
        if not valid:
            return box, [], []
        scorer = pipeline.models.scorer
        texts = [model_text(item.text, item.title, scorer.max_length) for _, item in valid]
        started = time.perf_counter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(pipeline.executor, pipeline.models.score, texts)
        except Exception as exc:
            # A model failure must not lose the items: dead-letter them with the reason.
            log.exception("scoring a batch of %d failed", len(texts))
            for msg, _ in valid:
                await dead(msg.value, "processing_error", f"model: {type(exc).__name__}: {exc}"[:500], msg, box)
            return box, [], []
        metrics.batch_size.observe(len(texts))
        metrics.scoring_seconds.observe(time.perf_counter() - started)
        return box, valid, results

    async def emit(box: Outbox, valid: list[tuple[Any, val.Item]], results: list[dict[str, TaskScore]]) -> None:
        """Write every scored item and its trend events; return once all of it (or a dead letter) is delivered."""
        for i, ((msg, item), scores) in enumerate(zip(valid, results, strict=True)):
            try:
                await finish_item(msg, item, scores, box, i)
            except Exception as exc:
                # Never die on data: anything unexpected goes to the dead-letter topic.
                log.exception("processing failed for %s[%s]@%s", msg.topic, msg.partition, msg.offset)
                await dead(msg.value, "processing_error", f"{type(exc).__name__}: {exc}"[:500], msg, box)
        undelivered = await box.confirm()
        if undelivered:
            # Outputs that never got through: the input goes to the dead-letter topic, not nowhere.
            metrics.send_failures.inc(len(undelivered))
            last = outbox()
            for origin, exc in undelivered.items():
                if isinstance(origin, int):
                    msg = valid[origin][0]
                    await dead(msg.value, "processing_error", f"output not delivered: {exc!r}"[:500], msg, last)
            await last.confirm()

    async def emit_and_ack(stream: Any, events: list[Any], prepared: tuple[Any, ...]) -> None:
        try:
            await emit(*prepared)
        except Exception:
            log.exception("emitting a batch of %d failed", len(events))
        for ev in events:
            await stream.ack(ev)

    # One actor takes up to batch_size events (or what arrived within max_wait) and scores
    # them in one forward pass. With overlap_io, batch N's outputs are written and confirmed
    # on the event loop while batch N+1 is tokenised and scored in the thread. take_events
    # acks a batch as soon as the body returns, so each message holds one extra reference
    # until its outputs are delivered: the offset becomes committable only then.
    @app.agent(inputs)
    async def score(stream: faust.StreamT) -> None:
        size, within = settings.model.batch_size, settings.model.max_wait_ms / 1000
        if not w.overlap_io:
            async for batch in stream.take_events(size, within=within):
                await emit(*await prepare(list(batch)))
            return
        inflight: asyncio.Task[None] | None = None
        try:
            async for batch in stream.take_events(size, within=within):
                events = list(batch)
                for ev in events:
                    ev.message.incref()
                prepared = await prepare(events)
                if inflight is not None:
                    await inflight
                inflight = asyncio.create_task(emit_and_ack(stream, events, prepared))
        finally:
            if inflight is not None:
                await inflight

    def publish_gauges(dim: str, key: str, closed: Any, stats: Any) -> None:
        label = metrics.key_label(dim, key)
        metrics.negative_share.labels(dim, label).set(closed.negative_share)
        metrics.sentiment_mean.labels(dim, label).set(closed.mean_score)
        metrics.window_count.labels(dim, label).set(closed.count)
        metrics.zscore.labels(dim, label).set(stats.zscore)
        metrics.baseline.labels(dim, label).set(stats.baseline_mean)
        metrics.window_end.labels(dim, label).set(closed.window_end / 1000)

    async def emit_alert(dim: str, key: str, alert: Any, box: Outbox) -> None:
        body = alert.to_dict()
        ak = key_of(dim, key).encode()
        await box.send(lambda: alerts.send(key=ak, value=body, force=True), what=f"{body['state']} alert for {ak!r}")
        label = metrics.key_label(dim, key)
        # The company this surge belongs to (its own, or the one a topic/all surge is derived
        # from): Alertmanager inhibits a derived page while that company's own surge fires.
        incident = metrics.incident_label(dim, label, body.get("derived_from"))
        if body["state"] == "firing":
            metrics.alerts.labels(dim, body["severity"]).inc()
            metrics.surge_active.labels(dim, label, body["severity"]).set(1)
            if incident is not None:
                metrics.surge_incident.labels(dim, label, incident).set(1)
        else:
            for sev in ("warning", "critical"):
                metrics.surge_active.labels(dim, label, sev).set(0)
            if incident is not None:
                metrics.clear_incident(dim, label, incident)

    async def close_key(k: str, state: dict[str, Any], watermark_ms: int, box: Outbox) -> tuple[dict[str, Any], bool]:
        dim, _, key = k.partition(":")
        windows_state, closed = win.close_due(state.get("w"), watermark_ms=watermark_ms, cfg=pipeline.window_cfg)
        state["w"] = windows_state
        before = (state.get("s") or {}).get("last_end")
        # The same per-key step the detector benchmark runs (bench/alerts.py): closed windows,
        # then the empty windows of a firing key that went quiet (calm, so the surge can resolve).
        surge_state, evaluated, quiet_alerts = surge_mod.advance(
            state.get("s"), closed, watermark_ms=watermark_ms, size_ms=pipeline.window_cfg.size_ms,
            allowed_lateness_ms=pipeline.window_cfg.allowed_lateness_ms, cfg=pipeline.surge_cfg, now_ms=now_ms(),
            dimension=dim, key=key,
        )  # fmt: skip
        state["s"] = surge_state
        changed = bool(closed) or (surge_state or {}).get("last_end") != before
        for cw, stats, alert in evaluated:
            body = cw.to_dict()
            body.update(
                dimension=dim,
                key=key,
                baseline_mean=stats.baseline_mean,
                baseline_std=stats.baseline_std,
                zscore=stats.zscore,
            )
            body.pop("evidence", None)
            await box.send(
                lambda body=body: trends.send(key=k.encode(), value=body, force=True), what=f"trend window of {k}"
            )
            publish_gauges(dim, key, cw, stats)
            if alert is not None:
                await emit_alert(dim, key, alert, box)
        for alert in quiet_alerts:
            await emit_alert(dim, key, alert, box)
        return state, changed

    # Table writes are batched per partition and flushed on that partition's tick: one
    # changelog record per changed key per tick instead of one per event (a hot key's
    # state is kilobytes). Events are acked only after the flush that persists them, so
    # a crash before it redelivers them (at-least-once; ids in the state de-duplicate).
    dirty: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
    held: dict[int, list[Any]] = defaultdict(list)

    @app.on_partitions_revoked.connect
    async def forget_revoked(app_: Any, revoked: set[Any], **kwargs: Any) -> None:
        for tp in revoked:
            if tp.topic == t.trend_events:
                dirty.pop(tp.partition, None)
                held.pop(tp.partition, None)

    @app.agent(events)
    async def aggregate(stream: faust.StreamT) -> None:
        manual = stream.noack()
        async for event in manual.events():
            msg = event.message
            value = event.value
            partition = msg.partition
            pending = dirty[partition]
            try:
                wm = pipeline.watermark(partition)
                if isinstance(value, dict) and "tick" in value:
                    # The tick's own stamp, not the clock: a tick left over from before a
                    # restart must not close windows whose items are still queued behind it.
                    watermark = wm.current(int(value["tick"]))
                    if watermark is not None:
                        keys = {k: st for k, st in table.items() if isinstance(st, dict) and st.get("p") == partition}
                        keys.update(pending)
                        box = outbox()
                        for k, state in keys.items():
                            state, changed = await close_key(k, state, watermark, box)
                            if changed:
                                pending[k] = state
                        lost = await box.confirm()
                        if lost:
                            metrics.send_failures.inc(len(lost))
                    if pending:
                        for k, state in pending.items():
                            table[k] = state
                        pending.clear()
                        if settings.kafka.embedded:
                            # tansu reports a partition's end as the last *batch*'s base offset + 1, so
                            # table recovery would stop before the rest of that batch. Once
                            # the writes are delivered, a lone fence record becomes the last batch.
                            await app.producer.flush()
                            table[FENCE_KEY] = {"at": int(value["tick"])}
                            await app.producer.flush()
                    for ev in held.pop(partition, []):
                        await manual.ack(ev)
                else:
                    k = msg.key.decode() if isinstance(msg.key, bytes) else str(msg.key)
                    wm.observe(int(value["event_ms"]), now_ms())
                    state = pending.get(k) or table.get(k) or {}
                    state["p"] = partition
                    windows_state, outcome = win.add_event(
                        state.get("w"),
                        event_ms=int(value["event_ms"]),
                        item_id=str(value["id"]),
                        sentiment=str(value["sentiment"]),
                        score=float(value["score"]),
                        evidence=value.get("evidence") or {},
                        cfg=pipeline.window_cfg,
                    )
                    state["w"] = windows_state
                    if outcome == "late":
                        metrics.late_items.labels(value.get("dimension", "?")).inc()
                    elif outcome == "duplicate":
                        metrics.duplicates.inc()
                    pending[k] = state
            except Exception:
                log.exception("aggregation failed for %s[%s]@%s", msg.topic, partition, msg.offset)
            finally:
                if isinstance(value, dict) and "tick" in value:
                    await manual.ack(event)
                else:
                    held[partition].append(event)

    @app.timer(settings.windows.tick_interval_s)
    async def tick() -> None:
        stamp = {"tick": now_ms()}
        for p in range(t.partitions):
            await events.send(value=stamp, partition=p, force=True)

    @app.timer(max(0.5, settings.model.reload_interval_s))
    async def housekeeping() -> None:
        # A timer that raises crashes the whole Faust app: a bad bundle must never do that.
        try:
            swapped = await asyncio.get_running_loop().run_in_executor(None, pipeline.models.maybe_reload)
        except Exception:
            log.exception("model reload check failed; the model in service is unchanged")
            return
        if swapped is not None:
            metrics.model_reloads.labels("swapped" if swapped else "refused").inc()
            if swapped:
                ident = pipeline.models.scorer.ident
                metrics.set_model(ident["name"], ident["version"], ident["sha256"])

    @app.timer(1.0)
    async def report_lag() -> None:
        metrics.loop_tasks.set(len(asyncio.all_tasks()))
        consumer = app.consumer
        for tp in list(consumer.assignment()):
            if tp.topic not in t.inputs:
                continue
            try:
                high = consumer.highwater(tp)
                pos = await consumer.position(TP(tp.topic, tp.partition))
            except Exception as exc:
                log.debug("lag of %s not known now: %r", tp, exc)
                continue
            if high is not None and pos is not None:
                metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, high - pos))

    app.finsent_table = table  # type: ignore[attr-defined]
    return app
