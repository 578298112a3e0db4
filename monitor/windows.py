"""Per-key tumbling windows over event time, as plain JSON state.

The worker keeps one state per `dimension:key` in a changelog-backed
Faust table, so state is a dict of JSON values (no classes, no pickle).
Windows are aligned to multiples of the size since the epoch; a window
closes when the watermark passes its end plus the allowed lateness.
Items later than that are counted in `late` (reported with the next
closed window and as a metric), never silently lost. Redelivered items
(at-least-once) are recognised by id while the window is open.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

SENTIMENTS = ("negative", "neutral", "positive")


@dataclass(frozen=True)
class WindowConfig:
    size_ms: int = 60_000
    allowed_lateness_ms: int = 10_000
    evidence_size: int = 3
    # Ids remembered per window for de-duplication; beyond this a redelivery
    # may be counted twice (keeps the changelog record small on hot keys).
    max_ids: int = 2_000


@dataclass(frozen=True)
class ClosedWindow:
    window_start: int
    window_end: int
    count: int
    negative: int
    neutral: int
    positive: int
    negative_share: float
    mean_score: float
    evidence: list[dict[str, Any]] = field(default_factory=list)
    late_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "window_start": self.window_start,
            "window_end": self.window_end,
            "count": self.count,
            "negative": self.negative,
            "neutral": self.neutral,
            "positive": self.positive,
            "negative_share": round(self.negative_share, 6),
            "mean_score": round(self.mean_score, 6),
            "late_count": self.late_count,
            "evidence": self.evidence,
        }


def _id_hash(item_id: str) -> str:
    return hashlib.blake2b(item_id.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()


def new_state() -> dict[str, Any]:
    return {"open": {}, "closed_until": None, "late": 0}


def add_event(
    state: dict[str, Any] | None,
    *,
    event_ms: int,
    item_id: str,
    sentiment: str,
    score: float,
    evidence: dict[str, Any],
    cfg: WindowConfig,
) -> tuple[dict[str, Any], str]:
    """Count one item in its window. Outcome: "accepted", "late" or "duplicate"."""
    st = state if state else new_state()
    start = event_ms - event_ms % cfg.size_ms
    closed_until = st.get("closed_until")
    if closed_until is not None and start + cfg.size_ms <= closed_until:
        st["late"] = int(st.get("late", 0)) + 1
        return st, "late"
    win = st["open"].get(str(start))
    if win is None:
        win = st["open"][str(start)] = {"count": 0, "negative": 0, "neutral": 0, "positive": 0, "score_sum": 0.0,
                                        "evidence": [], "ids": []}  # fmt: skip
    h = _id_hash(item_id)
    if h in win["ids"]:
        return st, "duplicate"
    if len(win["ids"]) < cfg.max_ids:
        win["ids"].append(h)
    label = sentiment if sentiment in SENTIMENTS else "neutral"
    win["count"] += 1
    win[label] += 1
    win["score_sum"] += float(score)
    ev = dict(evidence)
    ev.setdefault("score", float(score))
    if sentiment == "negative":
        pool = [*win["evidence"], ev]
        pool.sort(key=lambda e: float(e.get("score", 0.0)))
        win["evidence"] = pool[: cfg.evidence_size]
    return st, "accepted"


def close_due(
    state: dict[str, Any] | None, *, watermark_ms: int | None, cfg: WindowConfig
) -> tuple[dict[str, Any], list[ClosedWindow]]:
    """Close, oldest first, every open window whose end + lateness is at or before the watermark."""
    st = state if state else new_state()
    if watermark_ms is None:
        return st, []
    closed: list[ClosedWindow] = []
    for key in sorted(st["open"], key=int):
        start = int(key)
        end = start + cfg.size_ms
        if end + cfg.allowed_lateness_ms > watermark_ms:
            break
        w = st["open"].pop(key)
        n = int(w["count"])
        late = int(st.get("late", 0)) if not closed else 0
        closed.append(
            ClosedWindow(
                window_start=start,
                window_end=end,
                count=n,
                negative=int(w["negative"]),
                neutral=int(w["neutral"]),
                positive=int(w["positive"]),
                negative_share=w["negative"] / n if n else 0.0,
                mean_score=w["score_sum"] / n if n else 0.0,
                evidence=list(w["evidence"]),
                late_count=late,
            )
        )
        st["late"] = 0
        st["closed_until"] = max(int(st.get("closed_until") or 0), end)
    return st, closed


class Watermark:
    """Event-time progress of one partition.

    The watermark is the largest event time seen. When no event has arrived
    for `idle_ms` of wall time, it advances with the wall clock beyond that,
    so the last windows close and a surge can resolve after input stops.
    Right after a (re)start no event has been seen: the start counts as the
    last activity, so redelivered items get `idle_ms` to arrive before
    restored windows close; after that the stream counts as idle and the
    watermark is the wall clock minus `idle_ms`.
    """

    def __init__(self, idle_ms: int = 5_000, started_ms: int | None = None) -> None:
        self.idle_ms = idle_ms
        self.max_event_ms: int | None = None
        self.last_wall_ms: int | None = None
        self.started_ms = started_ms

    def observe(self, event_ms: int, wall_ms: int) -> None:
        if self.max_event_ms is None or event_ms > self.max_event_ms:
            self.max_event_ms = event_ms
        self.last_wall_ms = wall_ms

    def current(self, wall_ms: int) -> int | None:
        if self.max_event_ms is None or self.last_wall_ms is None:
            if self.started_ms is not None and wall_ms - self.started_ms <= self.idle_ms:
                return None
            return wall_ms - self.idle_ms
        idle = wall_ms - self.last_wall_ms
        if idle > self.idle_ms:
            return self.max_event_ms + (idle - self.idle_ms)
        return self.max_event_ms
