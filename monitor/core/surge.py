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
* Robust updates: a window's residual counts at most k standard deviations
  in the mean and at most `VAR_CLIP` (2) in the variance. Windows that do
  not fire but are far out (a surge's first, partial window of 16 items
  at 88 % negative, below min_volume; the spill-over of a company's surge
  into its topic) otherwise widen the very spread the surge is measured
  against, and its full windows then read "z = 2". A lasting shift is
  still learned, in steps; clipping at 2 sd understates a normal key's
  spread by about 5 %, a price paid in a few more alerts, not fewer.
* Windows update the baseline with a weight scaled by their volume,
  alpha * min(1, count / min_volume): a window of 2 items cannot move it as
  much as one of 200. Until the key has seen enough items for that, the
  baseline is a running mean over all its items so far, with `prior_mean`
  counted as `min_volume` pseudo-items (weight count / (items + count +
  min_volume)): a key's first window of 1 item must not drag the baseline
  to 0 or 1 (a sparse company whose first tweet is negative would carry
  "45 % normal" for hours), and its first full window still outweighs the
  prior.
* That running mean moves the mean only, and only on windows near the
  baseline (z < resolve_k). The spread always learns at the volume-scaled
  rate, and so does the mean on a far-out window. Why: a company named by
  1-5 items a window (the demo's BYD) had a wide spread after a few of
  them, one negative item in a 1-item window counting as much as a full
  window; and a surge's first, partial window (12 items at 67 %) moved its
  young baseline a third of the way up. Its 80 % surge then read z 2.3 and
  3.3 against k 3.5 and was learned as the new normal. The detector
  benchmark's keys are past this young phase when its surges come: its
  tables did not change, except recall over all injected surges (held-out
  0.514 -> 0.521) and the NAB score (49.8 -> 50.4).

* Two sources of spread (`count_aware_std`, on by default). A window's
  share varies because its items are a sample (binomial noise,
  mean (1 - mean) / count, known exactly from the window's own count) and
  because the key's mix really drifts (the excess variance, learned). The
  EW variance tracks only the excess: each update subtracts the window's
  binomial part. The z-score's variance is excess + this window's binomial
  part. Why: a company named in one tweet a minute has shares of 0 or 1,
  a plain EW variance near 0.13 (std 0.37), and then even a 70-item window
  at 80 % negative is "z = 1.7"; with the split, that window's std is
  about 0.05 and it fires, while a thin 20-item window of a busy key is
  judged by its own, larger, noise (the commonest false alarm otherwise).
  The excess over the baseline is continuity-corrected by 1 / (2 count)
  (a share moves in steps of 1 / count, and the normal approximation of
  a 20-item binomial otherwise undercounts its upper tail about twofold).
  With `count_aware_std` off, the plain EW variance of shares is used.

Propagation: an entity surge also raises its topic and all:all. A topic or
all-items alert names its `drivers` (the entities with the most negative
items in the firing window, from monitor/core/windows.py) and carries
`derived_from: "entity:<ticker>"` when one entity explains at least
`derive_share` of the window's negative excess over the baseline and has
enough negatives to fire on its own (min_share * min_volume). The worker
exports that as the `incident` label, and Alertmanager inhibits the derived
page while the company's own surge fires: one incident, one page.

All times are event times (window bounds), so replaying a stream gives the
same alerts; `now_ms` only stamps the alert's `at`. State is plain JSON
for the worker's changelog-backed table. `advance` is the whole per-key
step of the worker's aggregation (closed windows, then the empty windows
of a firing key that went quiet), so the worker and the detector benchmark
(bench/alerts.py) run the same code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

# Residuals count at most this many standard deviations in the variance update (module doc).
VAR_CLIP = 2.0


class WindowLike(Protocol):
    """What the rule reads of a closed window (read-only, so frozen dataclasses such as ClosedWindow fit)."""

    @property
    def window_start(self) -> int: ...
    @property
    def window_end(self) -> int: ...
    @property
    def count(self) -> int: ...
    @property
    def negative_share(self) -> float: ...
    @property
    def evidence(self) -> list[dict[str, Any]]: ...


def _negative_by_entity(window: object) -> dict[str, int]:
    """The window's negatives per entity, if it has them (older windows and test doubles do not)."""
    got = getattr(window, "negative_by_entity", None)
    return dict(got) if isinstance(got, dict) else {}


@dataclass(frozen=True)
class SurgeConfig:
    """Surge rule parameters: the ONE place the defaults live (monitor/settings.py reads them).

    Chosen with `python -m bench.alerts --tune` on real labelled items
    (docs/ALERTS.md): k, min_share and min_std by the coordinate search,
    the rest confirmed by it (no other value did better on the tuning set).
    """

    # z-score at or above which a window surges: at 3 small topic windows false-alarm too often;
    # 3.5 roughly halves that and still finds nearly every surge that doubles a share (docs/ALERTS.md).
    k: float = 3.5
    # Fewest items in a window for it to fire (a 3-item window at 100% negative is noise).
    # = the volume guard of NegativeSentimentSurge in deploy/prometheus/rules/finsent-alerts.yml.
    min_volume: int = 20
    # Smallest negative share that can fire, however quiet the baseline. Low on purpose: the
    # count-aware z-score already demands real evidence, and at 0.4 a typical 15-20 % share
    # that doubles never reaches it (the tuning run in docs/ALERTS.md loses recall there).
    min_share: float = 0.2
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
    # Floor on the baseline std: a perfectly flat history must not make z infinite. With the
    # window's binomial noise in the std, the floor matters only for windows of hundreds of items.
    min_std: float = 0.03
    # Starting baseline for a key never seen before (typical negative share of financial news).
    prior_mean: float = 0.15
    # The window's own binomial noise in the z-score's variance (see the module doc).
    count_aware_std: bool = True
    # A topic/all alert is derived from one entity that explains this share of its negative excess.
    derive_share: float = 0.5

    def __post_init__(self) -> None:
        if not (self.k > 0 and self.min_std > 0 and 0 < self.alpha <= 1 and self.resolve_windows >= 1):
            raise ValueError("surge config needs k > 0, min_std > 0, 0 < alpha <= 1 and resolve_windows >= 1")
        if not 0 < self.derive_share <= 1:
            raise ValueError("surge derive_share must be in (0, 1]")


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
    # "entity:<ticker>" when one company explains this topic/all surge (module doc), else None.
    derived_from: str | None = None
    # Entities with the most negative items in the firing window: [{"key": "entity:X", "negative": n}].
    drivers: list[dict[str, Any]] = field(default_factory=list)

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
            "derived_from": self.derived_from,
            "drivers": [dict(d) for d in self.drivers],
            "evidence": self.evidence,
        }


def new_state(cfg: SurgeConfig) -> dict[str, Any]:
    """A key never seen: baseline at the prior, not firing, no cooldown."""
    return {"n": 0, "items": 0, "mean": cfg.prior_mean, "var": 0.0, "firing": None, "calm": 0, "cooldown_until": 0,
            "last_end": 0}  # fmt: skip


def severity_of(z: float, share: float, cfg: SurgeConfig) -> str:
    """`critical` for z >= 2k or a share of 3/4 or more, else `warning`; fixed for the whole episode."""
    return "critical" if z >= 2 * cfg.k or share >= 0.75 else "warning"


def _stats(st: dict[str, Any], share: float, cfg: SurgeConfig, count: int = 0) -> TrendStats:
    var = max(st["var"], 0.0)
    diff = share - st["mean"]
    if cfg.count_aware_std and count > 0:
        var += _binomial(st["mean"], count)
        diff = math.copysign(max(0.0, abs(diff) - 0.5 / count), diff)  # continuity correction
    std = max(math.sqrt(var), cfg.min_std)
    return TrendStats(baseline_mean=st["mean"], baseline_std=std, zscore=diff / std)


def _binomial(mean: float, count: int) -> float:
    """Sampling variance of the negative share of `count` items at the baseline share."""
    m = min(max(mean, 0.0), 1.0)
    return m * (1 - m) / max(count, 1)


def _update_baseline(st: dict[str, Any], share: float, count: int, cfg: SurgeConfig, stats: TrendStats) -> None:
    volume_weight = cfg.alpha * min(1.0, count / max(cfg.min_volume, 1))
    # A running mean while the key is young, for the mean only and only on windows near the baseline
    # (module doc); state from before "items" existed is not young.
    seen = int(st.get("items", 1 << 30))
    weight = volume_weight
    if stats.zscore < cfg.resolve_k:
        weight = max(weight, count / (seen + count + max(cfg.min_volume, 1)))
    st["items"] = min(seen + count, 1 << 30)
    diff = share - st["mean"]
    sd = stats.baseline_std
    if st["n"] > 0:  # robust: clipped residuals (module doc); the first window has no spread to clip by
        diff_mean = max(-cfg.k * sd, min(cfg.k * sd, diff))
        diff_var = max(-VAR_CLIP * sd, min(VAR_CLIP * sd, diff))
    else:
        diff_mean = diff_var = diff
    noise = volume_weight * _binomial(st["mean"], count) if cfg.count_aware_std else 0.0
    st["mean"] += weight * diff_mean
    # West's EW variance; minus the window's binomial part when only the excess is tracked. The
    # excess may go below 0 here and is clipped where it is used (_stats): clipping the running
    # value instead would bias it upwards, by a lot for a sparse key's 0-or-1 shares.
    st["var"] = (1 - volume_weight) * (st["var"] + volume_weight * diff_var * diff_var) - noise
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
        derived_from=f.get("derived_from"),
        drivers=list(f.get("drivers") or []),
    )


def attribution(
    dimension: str, window: WindowLike, share: float, count: int, baseline_mean: float, cfg: SurgeConfig
) -> tuple[str | None, list[dict[str, Any]]]:
    """(derived_from, drivers) of a firing topic/all window: which company, if any, explains it.

    The negative excess is the window's negatives beyond what the baseline
    expects, negatives - baseline_mean * count. The top entity explains the
    surge when its negatives (a guaranteed lower bound) are at least
    derive_share of that excess and at least min_share * min_volume, the
    fewest negatives with which its own window could fire.
    """
    if dimension == "entity":
        return None, []
    by = _negative_by_entity(window)
    drivers: list[dict[str, Any]] = [{"key": f"entity:{k}", "negative": int(n)} for k, n in list(by.items())[:3]]
    if not drivers:
        return None, []
    excess = share * count - baseline_mean * count
    top: int = drivers[0]["negative"]
    if excess > 0 and top >= cfg.derive_share * excess and top >= cfg.min_share * cfg.min_volume:
        return str(drivers[0]["key"]), drivers
    return None, drivers


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
    stats = _stats(st, share, cfg, count)
    surging = (
        st["n"] >= cfg.warmup_windows and stats.zscore >= cfg.k and count >= cfg.min_volume and share >= cfg.min_share
    )
    alert: Alert | None = None
    st["last_end"] = max(int(st.get("last_end", 0)), window.window_end)
    if st["firing"] is None:
        if surging and window.window_start >= st["cooldown_until"]:
            derived_from, drivers = attribution(dimension, window, share, count, stats.baseline_mean, cfg)
            st["firing"] = {
                "alert_id": f"{dimension}:{key}:{window.window_start}",
                "started_at": window.window_start,
                "severity": severity_of(stats.zscore, share, cfg),
                "derived_from": derived_from,
                "drivers": drivers,
            }
            st["calm"] = 0
            alert = _alert(
                "firing", st, dimension, key, window, stats, share, count, now_ms, cfg, list(window.evidence)
            )
        elif not surging:
            _update_baseline(st, share, count, cfg, stats)
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


def advance(
    state: dict[str, Any] | None,
    closed: list[Any],
    *,
    watermark_ms: int,
    size_ms: int,
    allowed_lateness_ms: int,
    cfg: SurgeConfig,
    now_ms: int,
    dimension: str = "",
    key: str = "",
) -> tuple[dict[str, Any] | None, list[tuple[Any, TrendStats, Alert | None]], list[Alert]]:
    """One key's step on a watermark: evaluate its closed windows (oldest first), then the
    empty windows of a firing key that went quiet (calm, so the surge can resolve).

    Returns the new state (None when the key has none yet), each closed
    window with its stats and alert, and the alerts of the quiet windows,
    in the order the worker publishes them.
    """
    results: list[tuple[Any, TrendStats, Alert | None]] = []
    st = state
    for cw in closed:
        st, stats, alert = evaluate(st, cw, cfg, now_ms, dimension, key)
        results.append((cw, stats, alert))
    quiet: list[Alert] = []
    while st and st.get("firing") and st["last_end"] + size_ms + allowed_lateness_ms <= watermark_ms:
        start = st["last_end"]
        st, alert = evaluate_quiet(st, start, start + size_ms, cfg, now_ms, dimension, key)
        if alert is not None:
            quiet.append(alert)
    return st, results, quiet
