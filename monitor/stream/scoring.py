"""The score stage: validate input messages, score them in micro-batches, write what they feed.

One actor takes up to batch_size events (or what arrived within max_wait)
and scores them in one forward pass, tokenising and running the model in
the scoring thread, off the event loop. Each valid item becomes a scored
record and one trend event per `dimension:key` it counts towards, keyed by
that key: the trend-events topic is the repartition step (an item fans out
to several keys, which `group_by` cannot express), so every key's windows
live on exactly one worker. Anything that cannot be scored or delivered
goes to the dead-letter topic with its reason: the stage never drops an
item and never dies on data.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import Any

from monitor.core import entities as ent
from monitor.core import language
from monitor.core import validate as val
from monitor.core.records import key_of, scored_record, trend_event, trend_keys
from monitor.core.scores import TaskScore
from monitor.model.scorer import model_text
from monitor.model.service import ModelService
from monitor.stream.metrics import Metrics
from monitor.stream.outbox import Outbox
from monitor.stream.outputs import Outputs, now_ms

log = logging.getLogger(__name__)

Valid = list[tuple[Any, val.Item, tuple[str, language.LangSource]]]  # message, item, (language, how known)


class ScoreStage:
    def __init__(
        self,
        models: ModelService,
        outputs: Outputs,
        watchlist: ent.Watchlist,
        *,
        batch_size: int,
        max_wait_s: float,
        max_message_bytes: int,
        overlap_io: bool,
    ) -> None:
        self.models = models
        self.out = outputs
        self.metrics: Metrics = outputs.metrics
        self.watchlist = watchlist
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self.max_message_bytes = max_message_bytes
        self.overlap_io = overlap_io

    async def run(self, stream: Any) -> None:
        """Batch N's outputs are written and confirmed while batch N+1 is tokenised and scored.

        take_events acks a batch as soon as the loop body returns, so each
        message holds one extra reference until its outputs are delivered:
        its offset becomes committable only then.
        """
        batches = stream.take_events(self.batch_size, within=self.max_wait_s)
        if not self.overlap_io:
            async for batch in batches:
                await self.emit(*await self.prepare(list(batch)))
            return
        inflight: asyncio.Task[None] | None = None
        try:
            async for batch in batches:
                events = list(batch)
                for ev in events:
                    ev.message.incref()
                prepared = await self.prepare(events)
                if inflight is not None:
                    await inflight
                inflight = asyncio.create_task(self._emit_and_ack(stream, events, prepared))
        finally:
            if inflight is not None:
                await inflight

    async def _emit_and_ack(self, stream: Any, events: list[Any], prepared: tuple[Outbox, Valid, list[Any]]) -> None:
        try:
            await self.emit(*prepared)
        except Exception:
            log.exception("emitting a batch of %d failed", len(events))
        for ev in events:
            await stream.ack(ev)

    async def prepare(self, batch: list[Any]) -> tuple[Outbox, Valid, list[dict[str, TaskScore]]]:
        """Validate every event (bad ones to the dead-letter box), score the valid ones in one model call."""
        box = self.out.outbox()
        valid: Valid = []
        for event in batch:
            msg = event.message
            result = self._validate(msg)
            if isinstance(result, val.Invalid):
                await self.out.dead(msg.value, result.reason, result.detail, msg, box)
            else:
                valid.append((msg, result, language.item_language(result.lang, result.text)))
        if not valid:
            return box, [], []
        texts = [model_text(item.text, item.title, self.models.scorer.max_length) for _, item, _ in valid]
        langs = [lang for _, _, (lang, _) in valid]
        started = time.perf_counter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self.models.executor, self.models.score, texts, langs
            )
        except Exception as exc:
            # A model failure must not lose the items: dead-letter them with the reason.
            log.exception("scoring a batch of %d failed", len(texts))
            for msg, _, _ in valid:
                await self.out.dead(
                    msg.value, "processing_error", f"model: {type(exc).__name__}: {exc}"[:500], msg, box
                )
            return box, [], []
        self.metrics.batch_size.observe(len(texts))
        self.metrics.scoring_seconds.observe(time.perf_counter() - started)
        return box, valid, results

    def _validate(self, msg: Any) -> val.Item | val.Invalid:
        kafka_ts = int(msg.timestamp * 1000) if msg.timestamp else None
        try:
            return val.validate(msg.value, kafka_ts_ms=kafka_ts, max_bytes=self.max_message_bytes, now_ms=now_ms())
        except Exception as exc:
            return val.Invalid("processing_error", f"{type(exc).__name__}: {exc}"[:500])

    async def emit(self, box: Outbox, valid: Valid, results: list[dict[str, TaskScore]]) -> None:
        """Write every scored item and its trend events; return once all of it (or a dead letter) is delivered."""
        for i, ((msg, item, lang), scores) in enumerate(zip(valid, results, strict=True)):
            try:
                await self.finish_item(msg, item, lang, scores, box, i)
            except Exception as exc:
                # Never die on data: anything unexpected goes to the dead-letter topic.
                log.exception("processing failed for %s[%s]@%s", msg.topic, msg.partition, msg.offset)
                await self.out.dead(msg.value, "processing_error", f"{type(exc).__name__}: {exc}"[:500], msg, box)
        undelivered = await box.confirm()
        if undelivered:
            # Outputs that never got through: the input goes to the dead-letter topic, not nowhere.
            self.metrics.send_failures.inc(len(undelivered))
            last = self.out.outbox()
            for origin, err in undelivered.items():
                if isinstance(origin, int):
                    msg = valid[origin][0]
                    await self.out.dead(
                        msg.value, "processing_error", f"output not delivered: {err!r}"[:500], msg, last
                    )
            await last.confirm()

    async def finish_item(
        self,
        msg: Any,
        item: val.Item,
        lang: tuple[str, language.LangSource],
        scores: dict[str, TaskScore],
        box: Outbox,
        origin: int,
    ) -> None:
        kafka_ts = int(msg.timestamp * 1000) if msg.timestamp else None
        scorer = self.models.scorer
        found = ent.extract_entities(
            f"{item.title or ''} {item.text[: scorer.max_length * 16]}", item.tickers, self.watchlist
        )
        event_ms, source = val.event_time_ms(item, kafka_ts, now_ms())
        done = now_ms()
        record = scored_record(
            item.to_dict(), scores, found, scorer.route(lang[0]).ident,
            event_ms=event_ms, event_time_source=source, scored_at_ms=done, stream=msg.topic,
            lang=lang[0], lang_source=lang[1],
        )  # fmt: skip
        # Trend events first, the scored item last: once a consumer sees the scored
        # item, everything it feeds into has been handed to the producer.
        out, tp = self.out, (msg.topic, msg.partition)
        for dim, key in trend_keys(record):
            ek, ev = key_of(dim, key).encode(), trend_event(record, dim, key)
            await box.send(partial(out.send, out.events, key=ek, value=ev, source=tp), origin, "a trend event")
        sk = str(item.id).encode()
        await box.send(partial(out.send, out.scored, key=sk, value=record, source=tp), origin, f"scored item {item.id}")
        topic_label = record.get("topic", {}).get("label", "none")
        lang_label = lang[0] if lang[0] in scorer.routes else "other"  # bounded: languages a bundle declares
        self.metrics.messages.labels(msg.topic, topic_label, record["sentiment"]["label"], lang_label).inc()
        if kafka_ts:
            self.metrics.lag.observe(max(0.0, (done - kafka_ts) / 1000))
        self.metrics.last_scored.set(done / 1000)
