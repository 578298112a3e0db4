"""The aggregate stage: each key's windows, baseline and surge state, closed on ticks.

It consumes the trend events the score stage wrote, keyed by
`dimension:key`, and keeps one `KeyState` per key in a changelog-backed
table. A timer sends a tick to every partition; on a tick the stage closes
the due windows of that partition's keys (table writes must happen inside
the partition's own stream so the changelog stays co-partitioned), emits
trend windows and alerts, and updates the gauges.

The per-key gauges follow partition ownership: a key's series live on the
worker that owns its partition. When a rebalance moves a partition away,
its series are dropped (two workers exporting one key's gauges, one of them
frozen, would mislead every `max by (dimension, key)`); when a partition
arrives, or after a restart, its keys' gauges are set from the table as
soon as the changelog is read, before the key's next window closes, so a
surge still firing reads `finsent_surge_active 1` on its new owner at once.

Table writes are batched per partition and flushed on its tick: one
changelog record per changed key per tick instead of one per event (a hot
key's state is kilobytes). Events are acked only after the flush that
persists them, so a crash before it redelivers them (at-least-once; the ids
kept in each window de-duplicate). A trend event that cannot be counted, or
a key whose windows cannot be closed, is retried and then dead-lettered
with its reason, like an input the score stage cannot score.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from monitor.core import surge as surge_mod
from monitor.core import windows as win
from monitor.core.records import key_of, trend_record
from monitor.stream.metrics import Metrics, SeriesOwners
from monitor.stream.outbox import Outbox
from monitor.stream.outputs import Outputs, now_ms

log = logging.getLogger(__name__)

FENCE_KEY = "__fence__"
ATTEMPTS = 3  # tries for one trend event, and consecutive ticks a key may fail to close


@dataclass
class KeyState:
    """One `dimension:key`: the table partition it lives in, its open windows, its surge state and
    the gauge values of its last closed window (kept so a new owner can export them at once)."""

    partition: int
    windows: dict[str, Any] | None = None
    surge: dict[str, Any] | None = None
    gauges: dict[str, float] | None = None

    @classmethod
    def from_stored(cls, value: Any, partition: int) -> KeyState:
        if not isinstance(value, dict):
            return cls(partition)
        g = value.get("g")
        return cls(int(value.get("p", partition)), value.get("w"), value.get("s"), g if isinstance(g, dict) else None)

    def stored(self) -> dict[str, Any]:
        """The table's JSON form (short keys: a hot key's state is written once per tick)."""
        out = {"p": self.partition, "w": self.windows, "s": self.surge}
        if self.gauges is not None:  # state written before the gauges were kept has none
            out["g"] = self.gauges
        return out


GAUGE_FIELDS = ("share", "mean", "count", "z", "base", "end")


def window_gauges(closed: win.ClosedWindow, stats: surge_mod.TrendStats) -> dict[str, float]:
    """The last-window gauges of a key, in the form the table keeps them."""
    return {
        "share": closed.negative_share,
        "mean": closed.mean_score,
        "count": closed.count,
        "z": stats.zscore,
        "base": stats.baseline_mean,
        "end": closed.window_end / 1000,
    }


@dataclass(frozen=True)
class KeySeries:
    """What one stored key state says its gauges read: its last window, and the surge firing now."""

    dimension: str
    key: str
    partition: int
    last: dict[str, float] | None  # `window_gauges` of its last closed window, if the state kept them
    severity: str | None  # of the surge firing now; None when none fires
    derived_from: str | None = None


def series_of(k: str, value: Any) -> KeySeries | None:
    """A table entry's gauges; None for an entry that is no key's state (the fence record, a corrupt value)."""
    if not isinstance(value, dict) or not isinstance(value.get("p"), int) or ":" not in k:
        return None
    dim, _, key = k.partition(":")
    surge = value.get("s")
    firing = surge.get("firing") if isinstance(surge, dict) else None
    last = value.get("g")
    if not isinstance(last, dict) or any(not isinstance(last.get(n), int | float) for n in GAUGE_FIELDS):
        last = None
    if not isinstance(firing, dict) or not isinstance(firing.get("severity"), str):
        return KeySeries(dim, key, value["p"], last, None)
    return KeySeries(dim, key, value["p"], last, firing["severity"], firing.get("derived_from"))


@dataclass(frozen=True)
class AggregateConfig:
    windows: win.WindowConfig
    surge: surge_mod.SurgeConfig
    idle_ms: int
    fence: bool = False  # the embedded broker's table-recovery workaround (docs/BROKERS.md)


class AggregateStage:
    def __init__(self, table: Any, outputs: Outputs, cfg: AggregateConfig, flush: Callable[[], Awaitable[Any]]) -> None:
        self.table = table
        self.out = outputs
        self.metrics: Metrics = outputs.metrics
        self.cfg = cfg
        self.flush = flush
        self.dirty: dict[int, dict[str, KeyState]] = defaultdict(dict)
        self.held: dict[int, list[Any]] = defaultdict(list)
        self.watermarks: dict[int, win.Watermark] = {}
        self.close_failures: dict[str, int] = {}  # consecutive failed closes per key (in memory only)
        self.owners = SeriesOwners()
        self.owned: set[int] | None = None  # trend-events partitions assigned now; None before the first

    def forget(self, partitions: Iterable[int]) -> None:
        """A revoked partition's unflushed work is dropped: its unacked events are redelivered."""
        for p in partitions:
            self.dirty.pop(p, None)
            self.held.pop(p, None)

    def own(self, partitions: Iterable[int]) -> None:
        """Take a new assignment: drop what the partitions that moved away left here.

        Done on assignment, not on revocation: Faust's eager rebalancing revokes
        every partition at every rebalance, and dropping the gauges of those it
        keeps would blank them until the next recovery. A partition that comes
        back later gets a fresh watermark: one kept from an earlier ownership
        has an old idle clock and would close the windows of the backlog it
        now reads, counting their items as late.
        """
        owned = set(partitions)
        lost = (set(self.watermarks) | self.owners.partitions()) - owned
        self.owned = owned
        for p in lost:
            self.watermarks.pop(p, None)
        for dim, label in self.owners.release(lost):
            self.metrics.drop_key_series(dim, label)

    def owns(self, partition: int) -> bool:
        return self.owned is None or partition in self.owned

    async def restore_gauges(self) -> None:
        """Every owned key's gauges from the table, once the changelog is read (Faust's on_recover).

        Runs before the streams resume, so before any window closes here. An
        exception would end the worker's recovery, so it is logged instead:
        the gauges then come back with each key's next window.
        """
        try:
            for k, v in list(self.table.items()):
                series = series_of(k, v)
                if series is not None and self.owns(series.partition):
                    self.set_series(series)
        except Exception:
            log.exception("gauges not restored from the table; they return with each key's next window")

    def watermark(self, partition: int) -> win.Watermark:
        wm = self.watermarks.get(partition)
        if wm is None:
            wm = self.watermarks[partition] = win.Watermark(idle_ms=self.cfg.idle_ms, started_ms=now_ms())
        return wm

    async def run(self, stream: Any) -> None:
        manual = stream.noack()
        async for event in manual.events():
            value = event.value
            if isinstance(value, dict) and "tick" in value:
                try:
                    await self.on_tick(event.message.partition, int(value["tick"]), event.message, manual)
                except Exception:
                    # Nothing was dropped: held events stay unacked and are redelivered after a restart.
                    log.exception("tick on partition %s failed", event.message.partition)
                    self.metrics.aggregation_failures.labels("tick").inc()
                await manual.ack(event)
            else:
                await self.on_event(event, manual)

    async def on_event(self, event: Any, manual: Any) -> None:
        msg = event.message
        error: Exception | None = None
        for _ in range(ATTEMPTS):
            try:
                self.count(msg.partition, msg.key, event.value)
                self.held[msg.partition].append(event)
                return
            except Exception as exc:
                error = exc
        log.error("trend event %s[%s]@%s not counted: %r", msg.topic, msg.partition, msg.offset, error)
        self.metrics.aggregation_failures.labels("event").inc()
        box = self.out.outbox()
        raw = json.dumps(event.value, default=str).encode() if not isinstance(event.value, bytes) else event.value
        await self.out.dead(raw, "aggregation_error", f"{type(error).__name__}: {error}"[:500], msg, box)
        await box.confirm()
        await manual.ack(event)

    def count(self, partition: int, raw_key: Any, value: dict[str, Any]) -> None:
        """Add one trend event to its key's open window (pure state change; persisted on the next tick)."""
        k = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
        event_ms = int(value["event_ms"])
        self.watermark(partition).observe(event_ms, now_ms())
        pending = self.dirty[partition]
        state = pending.get(k) or KeyState.from_stored(self.table.get(k), partition)
        state.partition = partition
        state.windows, outcome = win.add_event(
            state.windows,
            event_ms=event_ms,
            item_id=str(value["id"]),
            sentiment=str(value["sentiment"]),
            score=float(value["score"]),
            evidence=value.get("evidence") or {},
            cfg=self.cfg.windows,
        )
        if outcome == "late":
            self.metrics.late_items.labels(value.get("dimension", "?")).inc()
        elif outcome == "duplicate":
            self.metrics.duplicates.inc()
        pending[k] = state

    async def on_tick(self, partition: int, tick_ms: int, tick_msg: Any, manual: Any) -> None:
        # The tick's own stamp, not the clock: a tick left over from before a
        # restart must not close windows whose items are still queued behind it.
        pending = self.dirty[partition]
        watermark = self.watermark(partition).current(tick_ms)
        if watermark is not None:
            await self.close_partition(partition, watermark, tick_msg)
        if pending:
            for k, state in pending.items():
                self.table[k] = state.stored()
            pending.clear()
            if self.cfg.fence:
                await self.flush()
                self.table[FENCE_KEY] = {"at": tick_ms}
                await self.flush()
        for ev in self.held.pop(partition, []):
            await manual.ack(ev)

    async def close_partition(self, partition: int, watermark: int, tick_msg: Any) -> None:
        pending = self.dirty[partition]
        keys = {
            k: KeyState.from_stored(v, partition)
            for k, v in self.table.items()
            if isinstance(v, dict) and v.get("p") == partition and k not in pending
        }
        keys.update(pending)
        box = self.out.outbox()
        for k, state in keys.items():
            try:
                if await self.close_key(k, state, watermark, box):
                    pending[k] = state
                self.close_failures.pop(k, None)
            except Exception as exc:
                await self._close_failed(k, state, exc, tick_msg, box)
        lost = await box.confirm()
        if lost:
            self.metrics.send_failures.inc(len(lost))

    async def _close_failed(self, k: str, state: KeyState, exc: Exception, tick_msg: Any, box: Outbox) -> None:
        """Retried on the next ticks; a key that keeps failing is dead-lettered with its state and starts over."""
        self.metrics.aggregation_failures.labels("close").inc()
        tries = self.close_failures[k] = self.close_failures.get(k, 0) + 1
        if tries < ATTEMPTS:
            log.warning("closing windows of %s failed (try %d): %r", k, tries, exc)
            return
        del self.close_failures[k]
        log.error("closing windows of %s failed %d times; its state goes to the dead-letter topic", k, ATTEMPTS)
        raw = json.dumps({"key": k, "state": state.stored()}, default=str).encode()
        await self.out.dead(raw, "aggregation_error", f"key {k}: {type(exc).__name__}: {exc}"[:500], tick_msg, box)
        self.dirty[state.partition][k] = KeyState(state.partition)

    async def close_key(self, k: str, state: KeyState, watermark_ms: int, box: Outbox) -> bool:
        """Close the key's due windows, advance its surge rule, send what came of it; True if the state changed."""
        dim, _, key = k.partition(":")
        state.windows, closed = win.close_due(state.windows, watermark_ms=watermark_ms, cfg=self.cfg.windows)
        before = (state.surge or {}).get("last_end")
        # The same per-key step the detector benchmark runs (bench/alert_replay.py): closed windows,
        # then the empty windows of a firing key that went quiet (calm, so the surge can resolve).
        state.surge, evaluated, quiet_alerts = surge_mod.advance(
            state.surge, closed, watermark_ms=watermark_ms, size_ms=self.cfg.windows.size_ms,
            allowed_lateness_ms=self.cfg.windows.allowed_lateness_ms, cfg=self.cfg.surge, now_ms=now_ms(),
            dimension=dim, key=key,
        )  # fmt: skip
        trends = self.out.trends
        for cw, stats, alert in evaluated:
            body = trend_record(cw, dim, key, stats)
            send = partial(self.out.send, trends, key=k.encode(), value=body, source=self.source(state.partition))
            await box.send(send, what=f"trend of {k}")
            state.gauges = window_gauges(cw, stats)
            self.set_series(KeySeries(dim, key, state.partition, state.gauges, None))
            if alert is not None:
                await self.emit_alert(dim, key, alert, box, state.partition)
        for alert in quiet_alerts:
            await self.emit_alert(dim, key, alert, box, state.partition)
        return bool(closed) or (state.surge or {}).get("last_end") != before

    def set_series(self, series: KeySeries) -> None:
        """Set a key's last-window gauges, and mark its surge firing if `severity` says one fires.

        A partition no longer owned is left alone: a tick still running when a
        rebalance took its partition away must not bring back the series the
        rebalance dropped.
        """
        if not self.owns(series.partition) or (series.last is None and series.severity is None):
            return  # nothing to show: a key without a closed window takes no entity label slot
        m = self.metrics
        dim = series.dimension
        label = m.key_label(dim, series.key)
        if series.last is not None:
            g = series.last
            m.negative_share.labels(dim, label).set(g["share"])
            m.sentiment_mean.labels(dim, label).set(g["mean"])
            m.window_count.labels(dim, label).set(g["count"])
            m.zscore.labels(dim, label).set(g["z"])
            m.baseline.labels(dim, label).set(g["base"])
            m.window_end.labels(dim, label).set(g["end"])
        if series.severity is not None:
            m.surge_active.labels(dim, label, series.severity).set(1)
            # The company this surge belongs to (its own, or the one a topic/all surge is derived
            # from): Alertmanager inhibits a derived page while that company's own surge fires.
            incident = m.incident_label(dim, label, series.derived_from)
            if incident is not None:
                m.surge_incident.labels(dim, label, incident).set(1)
        self.owners.note(series.partition, (dim, label))

    def source(self, partition: int) -> tuple[str, int]:
        """The trend-events partition a key's outputs come from (their transaction under exactly-once)."""
        return (self.out.events.get_topic_name(), partition)

    async def emit_alert(self, dim: str, key: str, alert: Any, box: Outbox, partition: int) -> None:
        body = alert.to_dict()
        ak = key_of(dim, key).encode()
        alerts = self.out.alerts
        source = self.source(partition)
        send = partial(self.out.send, alerts, key=ak, value=body, source=source)
        await box.send(send, what=f"{body['state']} alert for {ak!r}")
        if body["state"] == "firing":
            self.metrics.alerts.labels(dim, body["severity"]).inc()
            self.set_series(KeySeries(dim, key, partition, None, body["severity"], body.get("derived_from")))
        elif self.owns(partition):
            m = self.metrics
            label = m.key_label(dim, key)
            for sev in ("warning", "critical"):
                m.surge_active.labels(dim, label, sev).set(0)
            incident = m.incident_label(dim, label, body.get("derived_from"))
            if incident is not None:
                m.clear_incident(dim, label, incident)
