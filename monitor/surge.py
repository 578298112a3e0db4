"""The surge rule: is this window's negative share far above the key's normal?

DESIGN.md "Surge rule", per `dimension:key`, one closed window at a time:

* Baseline: an exponentially weighted mean and variance of the negative
  share over the key's past windows. A window's z-score is computed against
  the baseline as it was *before* that window:
  z = (share - mean) / max(std, min_std).
* Fire when z >= k AND count >= min_volume AND share >= min_share AND the
  key has at least `warmup_windows` windows of history AND it is not in
  cooldown.
* Hysteresis: a firing surge resolves only after `resolve_windows` calm
  windows in a row, calm meaning z < resolve_k, or count < min_volume, or
  share < min_share. An empty window (`evaluate_quiet`) is calm, so a key
  that goes silent resolves too.
* Cooldown: after a resolution the key cannot fire again until
  `cooldown_ms` after the resolving window's end. One surge gives one
  `firing` and one `resolved` alert, not one per window, and flapping
  around the threshold does not re-fire.

Baseline choices:

* While a surge fires the baseline is frozen (no update at all), and a
  window that would fire but is held back by the cooldown does not update
  it either: a surge must not become the new normal, or the z-score of the
  very surge being reported would melt away. The cost: a lasting shift in a
  key's normal keeps firing until the share falls back (the absolute
  NegativeShareHigh rule covers that case in Prometheus).
* Windows update the baseline with a weight scaled by their volume,
  alpha * min(1, count / min_volume): a window of 2 items cannot move it as
  much as one of 200. The first window of a key weighs at least 0.5 against
  `prior_mean` (a starting guess, not evidence).

All times are event times (window bounds), so replaying a stream gives the
same alerts; `now_ms` only stamps the alert's `at`. State is plain JSON
for the worker's changelog-backed table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol


class WindowLike(Protocol):
    window_start: int
    window_end: int
    count: int
    negative_share: float
    evidence: list[dict[str, Any]]


@dataclass(frozen=True)
class SurgeConfig:
    """Surge rule parameters (defaults as in DESIGN.md and the worker's settings)."""

    # z-score at or above which a window surges.
    k: float = 3.0
    # Fewest items in a window for it to fire (a 3-item window at 100% negative is noise).
    min_volume: int = 20
    # Smallest negative share that can fire, however quiet the baseline.
    min_share: float = 0.4
    # Weight of one full-volume window in the EW baseline (about the last 1/alpha windows count).
    alpha: float = 0.1
    # Windows of history a key needs before it can fire.
    warmup_windows: int = 5
    # A firing window is calm when its z falls below this (hysteresis: below k).
    resolve_k: float = 1.5
    # Calm windows in a row that resolve a surge.
    resolve_windows: int = 2
    # After a resolution the key cannot fire again for this long (event time).
    cooldown_ms: int = 300_000
    # Floor on the baseline std: a perfectly flat history must not make z infinite.
    min_std: float = 0.05
    # Starting baseline for a key never seen before (typical negative share of financial news).
    prior_mean: float = 0.15

    def __post_init__(self) -> None:
        if not (self.k > 0 and self.min_std > 0 and 0 < self.alpha <= 1 and self.resolve_windows >= 1):
            raise ValueError("surge config needs k > 0, min_std > 0, 0 < alpha <= 1 and resolve_windows >= 1")


@dataclass(frozen=True)
class TrendStats:
    """A window's share against the key's baseline before it (published with the trend window)."""

    baseline_mean: float
    baseline_std: float
    zscore: float


@dataclass(frozen=True)
class Alert:
    """A surge firing or its resolution; `alert_id` is the same for both (sinks de-duplicate on it)."""

    state: str  # firing | resolved
    severity: str
    dimension: str
    key: str
    window_start: int
    window_end: int
    negative_share: float
    baseline_mean: float
    baseline_std: float
    zscore: float
    count: int
    alert_id: str
    started_at: int
    at: int
    evidence: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "severity": self.severity,
            "dimension": self.dimension,
            "key": self.key,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "negative_share": round(self.negative_share, 6),
            "baseline_mean": round(self.baseline_mean, 6),
            "baseline_std": round(self.baseline_std, 6),
            "zscore": round(self.zscore, 4),
            "count": self.count,
            "alert_id": self.alert_id,
            "started_at": self.started_at,
            "at": self.at,
            "evidence": self.evidence,
        }


def new_state(cfg: SurgeConfig) -> dict[str, Any]:
    """A key never seen: baseline at the prior, not firing, no cooldown."""
    return {"n": 0, "mean": cfg.prior_mean, "var": 0.0, "firing": None, "calm": 0, "cooldown_until": 0, "last_end": 0}


def severity_of(z: float, share: float, cfg: SurgeConfig) -> str:
    """`critical` for z >= 2k or a share of 3/4 or more, else `warning`; fixed for the whole episode."""
    return "critical" if z >= 2 * cfg.k or share >= 0.75 else "warning"


def _stats(st: dict[str, Any], share: float, cfg: SurgeConfig) -> TrendStats:
    std = max(math.sqrt(max(st["var"], 0.0)), cfg.min_std)
    return TrendStats(baseline_mean=st["mean"], baseline_std=std, zscore=(share - st["mean"]) / std)


def _update_baseline(st: dict[str, Any], share: float, count: int, cfg: SurgeConfig) -> None:
    weight = cfg.alpha * min(1.0, count / max(cfg.min_volume, 1))
    if st["n"] == 0:
        weight = max(weight, 0.5)  # the first real window says more than the prior
    diff = share - st["mean"]
    incr = weight * diff
    st["mean"] += incr
    st["var"] = (1 - weight) * (st["var"] + diff * incr)
    st["n"] += 1


def _alert(state: str, st: dict[str, Any], dimension: str, key: str, w: Any, stats: TrendStats, share: float,
           count: int, now_ms: int, cfg: SurgeConfig, evidence: list[dict[str, Any]]) -> Alert:  # fmt: skip
    f = st["firing"]
    return Alert(
        state=state,
        severity=f["severity"],
        dimension=dimension,
        key=key,
        window_start=w.window_start,
        window_end=w.window_end,
        negative_share=share,
        baseline_mean=stats.baseline_mean,
        baseline_std=stats.baseline_std,
        zscore=stats.zscore,
        count=count,
        alert_id=f["alert_id"],
        started_at=f["started_at"],
        at=now_ms,
        evidence=evidence,
    )


def evaluate(
    state: dict[str, Any] | None, window: WindowLike, cfg: SurgeConfig, now_ms: int, dimension: str = "", key: str = ""
) -> tuple[dict[str, Any], TrendStats, Alert | None]:
    """Apply one closed window of `dimension:key` (windows in order, oldest first).

    Returns the new state, the window's stats against the baseline before
    it (for the trends record and gauges), and an Alert when the key starts
    firing or resolves, else None.
    """
    st = state if state else new_state(cfg)
    share, count = float(window.negative_share), int(window.count)
    if not math.isfinite(share):
        share = 0.0
    stats = _stats(st, share, cfg)
    surging = (
        st["n"] >= cfg.warmup_windows and stats.zscore >= cfg.k and count >= cfg.min_volume and share >= cfg.min_share
    )
    alert: Alert | None = None
    st["last_end"] = max(int(st.get("last_end", 0)), window.window_end)
    if st["firing"] is None:
        if surging and window.window_start >= st["cooldown_until"]:
            st["firing"] = {
                "alert_id": f"{dimension}:{key}:{window.window_start}",
                "started_at": window.window_start,
                "severity": severity_of(stats.zscore, share, cfg),
            }
            st["calm"] = 0
            alert = _alert(
                "firing", st, dimension, key, window, stats, share, count, now_ms, cfg, list(window.evidence)
            )
        elif not surging:
            _update_baseline(st, share, count, cfg)
    else:
        calm = stats.zscore < cfg.resolve_k or count < cfg.min_volume or share < cfg.min_share
        st["calm"] = st["calm"] + 1 if calm else 0
        if st["calm"] >= cfg.resolve_windows:
            alert = _alert("resolved", st, dimension, key, window, stats, share, count, now_ms, cfg, [])
            st["firing"] = None
            st["calm"] = 0
            st["cooldown_until"] = window.window_end + cfg.cooldown_ms
    return st, stats, alert


@dataclass(frozen=True)
class _Empty:
    window_start: int
    window_end: int
    count: int = 0
    negative_share: float = 0.0
    evidence: list[dict[str, Any]] = field(default_factory=list)


def evaluate_quiet(
    state: dict[str, Any] | None,
    window_start: int,
    window_end: int,
    cfg: SurgeConfig,
    now_ms: int,
    dimension: str = "",
    key: str = "",
) -> tuple[dict[str, Any], Alert | None]:
    """A window in which the key had no items: calm for a firing surge, no baseline change otherwise."""
    st = state if state else new_state(cfg)
    if st["firing"] is None:
        st["last_end"] = max(int(st.get("last_end", 0)), window_end)
        return st, None
    st, _stats_unused, alert = evaluate(st, _Empty(window_start, window_end), cfg, now_ms, dimension, key)
    return st, alert
