"""Drive the worker's aggregation code over a benchmark stream, without Kafka.

Two phases, because tuning evaluates hundreds of surge configurations on
the same stream and windowing is the expensive part:

1. `window_stream`: per item, `windows.add_event` for all:all, its topic and
   each of its entities (what `records.trend_keys` gives the worker, with
   the same evidence fields, so topic/all windows count negatives per
   entity); a watermark that follows event time; on every tick (one per
   window, at `end + allowed_lateness`) `windows.close_due` for each key
   with open windows. The result, per key, is its closed windows in order.
   It does not depend on the surge configuration.
2. `detect`: per key, `surge.advance` over those windows (the function the
   worker's `close_key` calls), one tick at a time, with the empty windows
   of a firing key evaluated before the next closed window as the worker's
   earlier ticks would have. Output: every alert, firing and resolved.

Phase 2 is exactly the worker's per-key sequence of surge calls; only
wall-clock stamps (`at`) differ, and those are the watermark here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bench.alert_scenarios import Item
from monitor.core import surge as surge_mod
from monitor.core import windows as win


@dataclass(frozen=True)
class AlertRec:
    """One alert of the replay (the fields scoring needs from `surge.Alert`)."""

    state: str
    dimension: str
    key: str
    window_start: int
    window_end: int
    severity: str
    derived_from: str | None
    alert_id: str

    @property
    def dim_key(self) -> str:
        return f"{self.dimension}:{self.key}"


@dataclass
class Windowed:
    """Phase 1 output: closed windows per `dimension:key`, and which keys each surge's items reached."""

    closed: dict[str, list[win.ClosedWindow]] = field(default_factory=dict)
    surge_keys: dict[int, set[str]] = field(default_factory=dict)
    end_ms: int = 0
    items: int = 0

    def max_count(self, key: str) -> int:
        """The key's busiest window (a key that never reaches min_volume cannot fire: detect skips it)."""
        cache = self.__dict__.setdefault("_max", {})
        if key not in cache:
            cache[key] = max((w.count for w in self.closed[key]), default=0)
        return int(cache[key])


def trend_keys(item: Item) -> list[str]:
    """The keys an item counts towards, as monitor.core.records.trend_keys gives them."""
    keys = ["all:all"]
    if item.topic:
        keys.append(f"topic:{item.topic}")
    keys.extend(f"entity:{e}" for e in item.entities)
    return keys


def window_stream(items: Iterable[Item], wcfg: win.WindowConfig) -> Windowed:
    out = Windowed()
    states: dict[str, dict[str, Any]] = {}
    open_keys: set[str] = set()
    size, late = wcfg.size_ms, wcfg.allowed_lateness_ms
    next_tick: int | None = None
    last = 0

    def tick(watermark: int) -> None:
        for k in sorted(open_keys):
            st, closed = win.close_due(states[k], watermark_ms=watermark, cfg=wcfg)
            if closed:
                out.closed.setdefault(k, []).extend(closed)
            if not st["open"]:
                open_keys.discard(k)

    for item in items:
        t = item.t_ms
        if next_tick is None:
            next_tick = win.window_start(t, size) + size + late
        while t >= next_tick:  # the watermark (max event time) passed a window's close time
            tick(next_tick)
            next_tick += size
        ents = list(item.entities)
        evidence = {"id": item.id, "entities": ents}
        for k in trend_keys(item):
            st, _outcome = win.add_event(
                states.get(k), event_ms=t, item_id=item.id, sentiment=item.sentiment,
                score=-1.0 if item.sentiment == "negative" else 0.0, evidence=evidence, cfg=wcfg,
                entities=ents if not k.startswith("entity:") else (),
            )  # fmt: skip
            states[k] = st
            open_keys.add(k)
            if item.surge is not None:
                out.surge_keys.setdefault(item.surge, set()).add(k)
        out.items += 1
        last = t
    # Input stops: the watermark runs on until every window has closed.
    final = win.window_start(last, size) + size + late
    while next_tick is not None and next_tick <= final:
        tick(next_tick)
        next_tick += size
    out.end_ms = final
    return out


def detect(data: Windowed, cfg: surge_mod.SurgeConfig, wcfg: win.WindowConfig) -> list[AlertRec]:
    """Every alert the surge rule raises on the windowed stream, in per-key order."""
    size, late = wcfg.size_ms, wcfg.allowed_lateness_ms
    alerts: list[AlertRec] = []

    def rec(a: surge_mod.Alert) -> AlertRec:
        return AlertRec(a.state, a.dimension, a.key, a.window_start, a.window_end, a.severity, a.derived_from,
                        a.alert_id)  # fmt: skip

    for k, closed in data.closed.items():
        if data.max_count(k) < cfg.min_volume:
            continue  # no window can fire; the baseline it would learn is never used
        dim, _, key = k.partition(":")
        st: dict[str, Any] | None = None
        for cw in closed:
            wm = cw.window_end + late
            if st and st.get("firing"):
                # The ticks before this window closed: a firing key's empty windows, one by one.
                st, _res, quiet = surge_mod.advance(
                    st, [], watermark_ms=cw.window_start + late, size_ms=size, allowed_lateness_ms=late, cfg=cfg,
                    now_ms=cw.window_start + late, dimension=dim, key=key,
                )  # fmt: skip
                alerts.extend(rec(a) for a in quiet)
            st, res, quiet = surge_mod.advance(
                st, [cw], watermark_ms=wm, size_ms=size, allowed_lateness_ms=late, cfg=cfg, now_ms=wm,
                dimension=dim, key=key,
            )  # fmt: skip
            alerts.extend(rec(a) for _cw, _stats, a in res if a is not None)
            alerts.extend(rec(a) for a in quiet)
        if st and st.get("firing"):
            st, _res, quiet = surge_mod.advance(
                st, [], watermark_ms=data.end_ms + 10 * size, size_ms=size, allowed_lateness_ms=late, cfg=cfg,
                now_ms=data.end_ms, dimension=dim, key=key,
            )  # fmt: skip
            alerts.extend(rec(a) for a in quiet)
    return alerts
