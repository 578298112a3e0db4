"""Scoring the surge detector on a replay: recall, precision, false alerts, delays, pages, NAB.

Definitions (docs/ALERTS.md explains the choices):

* A surge is *detected* when its own key (entity:X, topic:T or all:all)
  fires in a window that overlaps the surge or in the `grace` windows right
  after it. Time to detect = that window's end minus the surge start (the
  worker publishes the alert `allowed_lateness` later: the `_s` figure
  includes it). Time to resolve = the resolving window's end minus the
  surge end.
* *Qualifying* surges are the ones the acceptance bar is about: at least
  two windows of the key in which it had at least `min_volume` items and
  a negative share at least twice its natural share (measured on the
  windows the replay actually produced, not on the injection parameters).
* An alert is *attributable* to a surge when its key received injected
  items of that surge and it fired during the surge or its grace windows.
  Precision = attributable firing alerts / all firing alerts.
* *Pages per surge*: attributable firing alerts, before grouping, and after
  the propagation rule: an alert derived from a company (`derived_from`)
  whose own surge is firing at that moment is inhibited in Alertmanager.
* False alerts per key per day: firing alerts of a surge-free replay per
  key that could fire at all (reached min_volume in some window), per day.
* NAB score (Lavin & Ahmad 2015, standard profile): per surge window
  [start, end + grace], the first detection earns sigmoid(y) =
  2 / (1 + e^(5y)) - 1 with y = (t - window end) / window length in
  [-1, 0] (about 0.99 at the start, 0 at the end); a missed window costs 1;
  each unattributable alert costs 0.11. Normalised so that the null
  detector (never fires) scores 0 and a perfect one (every surge at its
  start, nothing else) 100. Alerts on related keys are neither rewarded
  nor penalised (they are counted as pages instead).
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.alert_replay import AlertRec, Windowed
from bench.alert_scenarios import Pool, SurgeSpec

A_FP = 0.11


def sigmoid(y: float) -> float:
    return 2 / (1 + math.exp(5 * y)) - 1


def _q(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


@dataclass
class SurgeOutcome:
    """What happened to one injected surge."""

    spec: SurgeSpec
    baseline_share: float
    peak_share: float
    peak_count: int
    windows_doubled: int  # windows with >= min_volume items and >= 2x the natural share
    qualifying: bool
    detected: bool
    ttd_windows: float | None
    ttd_s: float | None
    ttr_windows: float | None
    pages: int
    pages_grouped: int
    nab: float

    def to_dict(self) -> dict[str, Any]:
        s = self.spec
        return {
            "id": s.id, "kind": s.kind, "key": s.key, "start_ms": s.start_ms, "duration_windows": s.duration_windows,
            "share": s.share, "volume": s.volume, "baseline_share": round(self.baseline_share, 4),
            "peak_share": round(self.peak_share, 4), "peak_count": self.peak_count,
            "windows_doubled": self.windows_doubled, "qualifying": self.qualifying, "detected": self.detected,
            "ttd_windows": self.ttd_windows, "ttd_s": self.ttd_s, "ttr_windows": self.ttr_windows,
            "pages": self.pages, "pages_grouped": self.pages_grouped,
        }  # fmt: skip


def _episodes(alerts: Sequence[AlertRec]) -> dict[str, list[tuple[int, int]]]:
    """Per key: (fired window end, resolved window end) of each episode."""
    open_: dict[str, int] = {}
    out: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for a in alerts:
        if a.state == "firing":
            open_[a.alert_id] = a.window_end
        else:
            out[a.dim_key].append((open_.pop(a.alert_id, a.window_start), a.window_end))
    for aid, t in open_.items():
        out[aid.rsplit(":", 1)[0]].append((t, 1 << 62))
    return out


def score_surges(
    surges: Sequence[SurgeSpec],
    data: Windowed,
    alerts: Sequence[AlertRec],
    pool: Pool,
    *,
    min_volume: int,
    size_ms: int,
    lateness_ms: int,
    grace_windows: int = 1,
) -> dict[str, Any]:
    """Recall, precision, delays, pages per surge and NAB on a replay with injected surges."""
    firing = [a for a in alerts if a.state == "firing"]
    resolved = {a.alert_id: a for a in alerts if a.state == "resolved"}
    by_key: dict[str, list[AlertRec]] = defaultdict(list)
    for a in firing:
        by_key[a.dim_key].append(a)
    for v in by_key.values():
        v.sort(key=lambda a: a.window_end)
    episodes = _episodes(alerts)
    attributed: set[str] = set()
    outcomes: list[SurgeOutcome] = []
    for s in surges:
        lo, hi = s.start_ms, s.end_ms + grace_windows * size_ms
        p0 = pool.negative_share_of(s.kind, s.key)
        wins = data.closed.get(s.dim_key, [])
        starts = [w.window_start for w in wins]
        i = bisect.bisect_right(starts, s.start_ms - size_ms)
        inside = []
        while i < len(wins) and wins[i].window_start < s.end_ms:
            if wins[i].window_end > s.start_ms:
                inside.append(wins[i])
            i += 1
        doubled = sum(1 for w in inside if w.count >= min_volume and w.negative_share >= 2 * p0)
        peak = max(inside, key=lambda w: (w.count >= min_volume, w.negative_share), default=None)
        hit = next((a for a in by_key.get(s.dim_key, []) if lo < a.window_end < hi + size_ms), None)
        ttd_w = ttd_s = ttr = None
        nab = -1.0
        if hit is not None:
            ttd_w = (hit.window_end - s.start_ms) / size_ms
            ttd_s = (hit.window_end + lateness_ms - s.start_ms) / 1000
            nab = sigmoid((hit.window_end - hi) / (hi - lo))
            res = resolved.get(hit.alert_id)
            if res is not None:
                ttr = (res.window_end - s.end_ms) / size_ms
        related = data.surge_keys.get(s.id, set()) | {s.dim_key}
        pages = [a for k in related for a in by_key.get(k, []) if lo < a.window_end < hi + size_ms]
        grouped = 0
        for a in pages:
            attributed.add(f"{a.alert_id}")
            driver = a.derived_from
            inhibited = driver is not None and any(
                f <= a.window_end < r for f, r in episodes.get(driver, []) if driver != a.dim_key
            )
            grouped += 0 if inhibited else 1
        outcomes.append(SurgeOutcome(
            spec=s, baseline_share=p0, peak_share=peak.negative_share if peak else 0.0,
            peak_count=peak.count if peak else 0, windows_doubled=doubled, qualifying=doubled >= 2,
            detected=hit is not None, ttd_windows=ttd_w, ttd_s=ttd_s, ttr_windows=ttr, pages=len(pages),
            pages_grouped=grouped, nab=nab,
        ))  # fmt: skip
    fp = [a for a in firing if a.alert_id not in attributed]
    n = len(outcomes)
    raw = sum(o.nab for o in outcomes) - A_FP * len(fp)
    perfect = n * sigmoid(-1.0)
    nab_score = 100 * (raw + n) / (perfect + n) if n else None
    return {"outcomes": outcomes, "false_positives": len(fp), "firing": len(firing),
            "precision": (len(firing) - len(fp)) / len(firing) if firing else None,
            "nab": nab_score}  # fmt: skip


def summarize(outcomes: Sequence[SurgeOutcome], subset: str = "qualifying") -> dict[str, Any]:
    """Recall, delays and pages over a subset of surges."""
    chosen = [o for o in outcomes if (o.qualifying if subset == "qualifying" else True)]
    det = [o for o in chosen if o.detected]
    ttd_w = [o.ttd_windows for o in det if o.ttd_windows is not None]
    ttd_s = [o.ttd_s for o in det if o.ttd_s is not None]
    ttr = [o.ttr_windows for o in det if o.ttr_windows is not None]
    pages = [o.pages for o in det]
    grouped = [o.pages_grouped for o in det]

    def r(x: float | None, nd: int = 2) -> float | None:
        return None if x is None else round(x, nd)

    return {
        "surges": len(chosen),
        "detected": len(det),
        "recall": r(len(det) / len(chosen), 3) if chosen else None,
        "ttd_windows_median": r(_q(ttd_w, 0.5)),
        "ttd_windows_p90": r(_q(ttd_w, 0.9)),
        "ttd_s_median": r(_q(ttd_s, 0.5), 1),
        "ttd_s_p90": r(_q(ttd_s, 0.9), 1),
        "ttr_windows_median": r(_q(ttr, 0.5)),
        "ttr_windows_p90": r(_q(ttr, 0.9)),
        "pages_per_surge": r(statistics.mean(pages)) if pages else None,
        "pages_per_surge_grouped": r(statistics.mean(grouped)) if grouped else None,
    }


def score_quiet(data: Windowed, alerts: Sequence[AlertRec], *, min_volume: int, days: float) -> dict[str, Any]:
    """False alerts of a surge-free replay, per key that could fire, per simulated day."""
    eligible = [k for k, ws in data.closed.items() if any(w.count >= min_volume for w in ws)]
    per_key: dict[str, int] = defaultdict(int)
    for a in alerts:
        if a.state == "firing":
            per_key[a.dim_key] += 1
    worst = max(per_key.items(), key=lambda kv: kv[1], default=("", 0))
    total = sum(per_key.values())
    return {
        "keys_eligible": len(eligible),
        "false_alerts": total,
        "false_alerts_per_day": round(total / days, 2),
        "fa_per_key_day_mean": round(total / max(1, len(eligible)) / days, 4),
        "fa_per_key_day_max": round(worst[1] / days, 3),
        "worst_key": worst[0] or None,
        "by_key": dict(sorted(per_key.items(), key=lambda kv: -kv[1])),
    }
