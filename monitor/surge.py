"""The surge rule: is this window's negative share far above the key's normal?

Per key, an exponentially weighted mean and variance of the negative share
over past windows is the baseline. A window fires when its z-score against
the baseline (as it was before the window) is at least `k`, it has at
least `min_volume` items, and its negative share is at least `min_share`.
A firing surge resolves only after `resolve_windows` calm windows in a row
(hysteresis: calm means z below `resolve_k`, or too few items, or share
below `min_share`), then a cooldown stops the same key from firing again
at once: one surge makes one alert and one resolution, not one per window.

While a surge fires the baseline is frozen, so the surge does not become
the new normal. Windows update the baseline with a weight scaled by their
volume, so a window of 2 items cannot move it as much as one of 200.
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
    k: float = 3.0
    min_volume: int = 20
    min_share: float = 0.4
    alpha: float = 0.1
    warmup_windows: int = 5
    resolve_k: float = 1.5
    resolve_windows: int = 2
    cooldown_ms: int = 300_000
    # Floor on the baseline std: a perfectly flat history must not make z infinite.
    min_std: float = 0.05
    # Starting baseline for a key never seen before (typical negative share of financial news).
    prior_mean: float = 0.15


@dataclass(frozen=True)
class TrendStats:
    baseline_mean: float
    baseline_std: float
    zscore: float


@dataclass(frozen=True)
class Alert:
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
    return {"n": 0, "mean": cfg.prior_mean, "var": 0.0, "firing": None, "calm": 0, "cooldown_until": 0, "last_end": 0}


def severity_of(z: float, share: float, cfg: SurgeConfig) -> str:
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
    """Apply one closed window; returns new state, the window's stats, and an alert if the state changed."""
    st = state if state else new_state(cfg)
    share, count = float(window.negative_share), int(window.count)
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
            alert = _alert("firing", st, dimension, key, window, stats, share, count, now_ms, cfg, window.evidence)
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
