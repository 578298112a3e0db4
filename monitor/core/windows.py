"""Per-key tumbling windows over event time, as plain JSON state.

The worker keeps one state per `dimension:key` in a changelog-backed Faust
table, so the state is a dict of JSON values (no classes, no pickle) and
every function here takes a state and returns the new one (the same dict,
updated in place, or a fresh one for `None`).

State layout::

    {"open": {"<window_start>": {"count", "negative", "neutral", "positive",
                                 "score_sum", "evidence": [...], "ids": {"<hash>": 1},
                                 "neg_by": {"<ticker>": [count, error]}}},
     "closed_until": <ms or null>,   # every window ending at or before this is closed
     "late": <int>}                   # late items since the last close

Rules:

* Windows are `[start, start + size_ms)` with `start` a multiple of
  `size_ms` since the epoch, so every key and every worker agrees on them.
* A window closes once the watermark reaches `end + allowed_lateness_ms`;
  `close_due` emits closed windows oldest first and, per key, in strictly
  increasing order (the surge baseline depends on that).
* `closed_until` advances with the watermark even for windows that never
  had an item, so an item for any closed period is `late`: it is counted
  in `late` (reported with the next closed window as `late_count` and as a
  metric), never silently lost and never re-opening a closed window.
* At-least-once redelivery: a window remembers a 48-bit hash of each item
  id it counted (up to `max_ids`) and reports a second delivery as
  `duplicate`. After a window closed, a redelivered item is `late`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

SENTIMENTS = ("negative", "neutral", "positive")
EVIDENCE_FIELDS = ("id", "text", "title", "source", "url")


@dataclass(frozen=True)
class WindowConfig:
    """Window size, how long a window waits for late items, and how much evidence it keeps."""

    size_ms: int = 60_000
    allowed_lateness_ms: int = 10_000
    # The most negative items kept per window (attached to surge alerts).
    evidence_size: int = 3
    evidence_text_chars: int = 280
    # Ids remembered per window for de-duplication (about 17 bytes each in the
    # changelog record). Beyond this a redelivered item may be counted twice;
    # 10k keeps a hot key's record near 170 KB, well under Kafka's 1 MB limit.
    max_ids: int = 10_000
    # Entities whose negative items a window counts (Space-Saving slots; see the module doc).
    entity_slots: int = 8

    def __post_init__(self) -> None:
        if (
            self.size_ms <= 0
            or self.allowed_lateness_ms < 0
            or self.evidence_size < 0
            or self.max_ids < 0
            or self.entity_slots < 0
        ):
            raise ValueError("window size must be > 0; lateness, evidence size, max ids and entity slots >= 0")


@dataclass(frozen=True)
class ClosedWindow:
    """One closed window of one key: what goes to the trends topic and the surge rule."""

    window_start: int
    window_end: int
    count: int
    negative: int
    neutral: int
    positive: int
    negative_share: float
    mean_score: float
    evidence: list[dict[str, Any]] = field(default_factory=list)
    # Late items of this key since the previous close (their windows had already closed).
    late_count: int = 0
    # Negative items per entity they name, most first (guaranteed lower bounds, at most entity_slots).
    negative_by_entity: dict[str, int] = field(default_factory=dict)

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
            "negative_by_entity": dict(self.negative_by_entity),
            "evidence": [dict(e) for e in self.evidence],
        }


def window_start(event_ms: int, size_ms: int) -> int:
    """Start of the window holding event_ms (floor, so negative times work too)."""
    return event_ms - event_ms % size_ms


def _id_hash(item_id: str) -> str:
    # surrogatepass: an id is any str; a hash must never raise.
    return hashlib.blake2b(item_id.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()


def new_state() -> dict[str, Any]:
    return {"open": {}, "closed_until": None, "late": 0}


def _new_window() -> dict[str, Any]:
    return {"count": 0, "negative": 0, "neutral": 0, "positive": 0, "score_sum": 0.0, "evidence": [], "ids": {}}


def _count_entities(win: dict[str, Any], entities: Any, slots: int) -> None:
    """Space-Saving update of the window's negative-items-per-entity table (see the module doc)."""
    if slots <= 0 or not isinstance(entities, list | tuple):
        return
    table: dict[str, list[int]] = win.setdefault("neg_by", {})
    for e in dict.fromkeys(str(x) for x in entities):  # an item counts once per entity
        slot = table.get(e)
        if slot is not None:
            slot[0] += 1
        elif len(table) < slots:
            table[e] = [1, 0]
        else:
            # Evict the smallest (ties: the alphabetically first, so replays are deterministic).
            victim = min(table, key=lambda k: (table[k][0], k))
            floor = table.pop(victim)[0]
            table[e] = [floor + 1, floor]


def _negative_by_entity(table: dict[str, list[int]] | None) -> dict[str, int]:
    if not table:
        return {}
    ranked = sorted(((c - err, k) for k, (c, err) in table.items() if c - err > 0), key=lambda t: (-t[0], t[1]))
    return {k: n for n, k in ranked}


def _evidence(evidence: dict[str, Any], item_id: str, score: float, cfg: WindowConfig) -> dict[str, Any]:
    ev: dict[str, Any] = {k: evidence.get(k) for k in EVIDENCE_FIELDS}
    ev["id"] = str(ev["id"] if ev["id"] is not None else item_id)
    if isinstance(ev["text"], str):
        ev["text"] = ev["text"][: cfg.evidence_text_chars]
    ev["score"] = score
    return ev


def add_event(
    state: dict[str, Any] | None,
    *,
    event_ms: int,
    item_id: str,
    sentiment: str,
    score: float,
    evidence: dict[str, Any],
    cfg: WindowConfig,
    entities: list[str] | tuple[str, ...] | None = None,
) -> tuple[dict[str, Any], str]:
    """Count one item in its window.

    Outcome: `accepted`; `late` (its window is closed: counted in
    state["late"], not in a window); or `duplicate` (this id was already
    counted in that open window: an at-least-once redelivery). An unknown
    sentiment label counts as neutral; a non-finite score as 0.

    `entities` (default: the evidence's "entities", which the trend event
    of a topic or all-items key carries) are counted per window for
    negative items only: what a surge alert needs to name its driver.
    """
    st = state if state else new_state()
    start = window_start(int(event_ms), cfg.size_ms)
    closed_until = st.get("closed_until")
    if closed_until is not None and start + cfg.size_ms <= closed_until:
        st["late"] = int(st.get("late", 0)) + 1
        return st, "late"
    win = st["open"].get(str(start))
    if win is None:
        win = st["open"][str(start)] = _new_window()
    ids = win["ids"]
    if isinstance(ids, list):  # state written by an older version
        ids = win["ids"] = dict.fromkeys(ids, 1)
    h = _id_hash(item_id)
    if h in ids:
        return st, "duplicate"
    if len(ids) < cfg.max_ids:
        ids[h] = 1
    score = float(score)
    if not math.isfinite(score):
        score = 0.0
    win["count"] += 1
    label = sentiment if sentiment in SENTIMENTS else "neutral"
    win[label] += 1
    win["score_sum"] += score
    if label == "negative":
        _count_entities(win, evidence.get("entities") if entities is None else entities, cfg.entity_slots)
    kept = win["evidence"]
    if cfg.evidence_size > 0 and (len(kept) < cfg.evidence_size or score < float(kept[-1]["score"])):
        pool = [*kept, _evidence(evidence, item_id, score, cfg)]
        pool.sort(key=lambda e: float(e["score"]))  # stable: on a tie the earlier item stays
        win["evidence"] = pool[: cfg.evidence_size]
    return st, "accepted"


def close_due(
    state: dict[str, Any] | None, *, watermark_ms: int | None, cfg: WindowConfig
) -> tuple[dict[str, Any], list[ClosedWindow]]:
    """Close, oldest first, every open window with `end + allowed_lateness <= watermark`.

    The key's late items since the last close go to the first window closed.
    `closed_until` moves up to the last window end the watermark has passed,
    whether or not that window had items (so later items for it are late).
    A `None` watermark (not known yet) closes nothing.
    """
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
                late_count=0 if closed else int(st.get("late", 0)),
                negative_by_entity=_negative_by_entity(w.get("neg_by")),
            )
        )
        st["late"] = 0
    passed = window_start(watermark_ms - cfg.allowed_lateness_ms, cfg.size_ms)
    ends = [passed, *(c.window_end for c in closed)]
    if st.get("closed_until") is not None:
        ends.append(int(st["closed_until"]))
    st["closed_until"] = max(ends)
    return st, closed


class Watermark:
    """Event-time progress of one partition of trend events (pure: wall time is passed in).

    * While events flow, the watermark is the largest event time observed,
      where an event time counts at most `max_ahead_ms` beyond the wall
      clock at which it was observed: one item stamped minutes in the future
      must not close every window of the partition early.
    * When no event has been observed for more than `idle_ms` of wall time,
      it advances with the wall clock: max event time + (idle time - idle_ms).
      So the last windows close and a surge can resolve after input stops.
    * Before any event (a fresh start or a restart), the start counts as the
      last activity: for `idle_ms` after `started_ms` it is `None` (nothing
      closes, so redelivered items reach their restored windows first), then
      it is wall clock - `idle_ms`. Without `started_ms` that fallback
      applies at once.
    * It never goes backwards: `current` returns at least what it returned
      before, even when events older than that arrive after an idle period
      (their windows are then closed and the items count as late).
    """

    def __init__(self, idle_ms: int = 5_000, started_ms: int | None = None, max_ahead_ms: int = 0) -> None:
        self.idle_ms = idle_ms
        self.max_ahead_ms = max_ahead_ms
        self.started_ms = started_ms
        self.max_event_ms: int | None = None
        self.last_wall_ms: int | None = None
        self._high: int | None = None

    def observe(self, event_ms: int, wall_ms: int) -> None:
        """Record one event seen at wall time `wall_ms`."""
        effective = min(int(event_ms), wall_ms + self.max_ahead_ms)
        if self.max_event_ms is None or effective > self.max_event_ms:
            self.max_event_ms = effective
        self.last_wall_ms = wall_ms

    def current(self, wall_ms: int) -> int | None:
        """The watermark at wall time `wall_ms` (None until it is known)."""
        if self.max_event_ms is None or self.last_wall_ms is None:
            if self.started_ms is not None and wall_ms - self.started_ms <= self.idle_ms:
                return self._high
            value = wall_ms - self.idle_ms
        else:
            idle = wall_ms - self.last_wall_ms
            value = self.max_event_ms + max(0, idle - self.idle_ms)
        if self._high is None or value > self._high:
            self._high = value
        return self._high
