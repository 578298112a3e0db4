"""The demo's live view: its state (fed by a consumer thread) and pure functions that draw it.

The view exists to show one thing: the injected surge's alert. It is
pinned at the top of the alerts panel while it fires and after it
resolves, the alerts panel comes before the trends table, and the table
gets only the lines left over, so an 80x24 terminal shows the alert too.
`render` and `summary_lines` are pure functions of the state (and the
terminal size and time), so tests render them without a broker.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from monitor.core.surge import SurgeConfig

# Evidence headlines shown under the pinned surge alert (and in the final summary).
EVIDENCE_LINES = 3
# Lines the view leaves free at the bottom: a frame as tall as the terminal scrolls its first line away.
SLACK_LINES = 1
# A trend row is highlighted at the surge rule's z threshold (half of it: amber).
SURGE_Z = SurgeConfig().k


@dataclass
class DemoState:
    """What the view shows; fed by the consumer thread, read by the renderer.

    Alerts are kept per episode (`alert_id`), not per record: delivery is
    at-least-once and a surge sends `firing` then `resolved` under one id,
    so the view and the summary show each surge once, with its current state.
    """

    surge_key: str = "TSLA"
    surge_start_s: float = 45.0
    surge_duration_s: float = 40.0
    started: float = field(default_factory=time.monotonic)
    started_wall_ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)
    scored: int = 0
    deadletters: int = 0
    sentiments: dict[str, int] = field(default_factory=lambda: {"negative": 0, "neutral": 0, "positive": 0})
    languages: dict[str, int] = field(default_factory=dict)
    recent_rate: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=50))
    trends: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    episodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    lags: deque[float] = field(default_factory=lambda: deque(maxlen=500))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_scored(self, rec: dict[str, Any], now: float) -> None:
        with self.lock:
            self.scored += 1
            lab = (rec.get("sentiment") or {}).get("label")
            if lab in self.sentiments:
                self.sentiments[lab] += 1
            lang = str(rec.get("lang") or "?")
            self.languages[lang] = self.languages.get(lang, 0) + 1
            if isinstance(rec.get("lag_ms"), int | float):
                self.lags.append(float(rec["lag_ms"]))
            self.recent_rate.append((now, self.scored))

    def on_trend(self, rec: dict[str, Any]) -> None:
        with self.lock:
            self.trends[(str(rec.get("dimension")), str(rec.get("key")))] = rec

    def on_alert(self, rec: dict[str, Any]) -> None:
        """Fold a firing or resolved record into its episode (duplicates and either order are fine)."""
        state = str(rec.get("state") or "")
        aid = str(rec.get("alert_id") or f"{rec.get('dimension')}:{rec.get('key')}:{rec.get('started_at')}")
        with self.lock:
            ep = self.episodes.setdefault(
                aid,
                {
                    "alert_id": aid,
                    "dimension": str(rec.get("dimension")),
                    "key": str(rec.get("key")),
                    "severity": str(rec.get("severity") or ""),
                    "started_at": _int(rec.get("started_at") or rec.get("window_start")),
                    "state": "firing",
                    "resolved_at": None,
                    "firing": None,
                },
            )
            if state == "firing" and ep["firing"] is None:
                ep["firing"] = rec
            elif state == "resolved":
                ep["state"] = "resolved"
                ep["resolved_at"] = _int(rec.get("window_end") or rec.get("at"))

    def rate(self) -> float:
        with self.lock:
            if len(self.recent_rate) < 2:
                return 0.0
            (t0, n0), (t1, n1) = self.recent_rate[0], self.recent_rate[-1]
            return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def p50_lag_ms(self) -> float:
        with self.lock:
            lags = sorted(self.lags)
        return lags[len(lags) // 2] if lags else 0.0

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert episode, oldest first (by start, then arrival)."""
        with self.lock:
            eps = list(self.episodes.values())
        return sorted(eps, key=lambda e: e["started_at"])

    def firing(self) -> list[dict[str, Any]]:
        return [e for e in self.alerts() if e["state"] == "firing"]

    def surge_alert(self) -> dict[str, Any] | None:
        """The latest episode of the injected surge's key (`entity:<ticker>`), if any."""
        mine = [e for e in self.alerts() if e["dimension"] == "entity" and e["key"] == self.surge_key]
        return mine[-1] if mine else None


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _clock(state: DemoState, ms: int | None, *, wall: bool = True) -> str:
    """An event time as wall clock and as seconds since the demo started ("12:00:52 (+52 s)").

    The offset is what relates an alert to the surge's schedule (`--surge-start`);
    `wall=False` gives the offset alone ("+52 s") for narrow terminals.
    """
    if not ms:
        return "?"
    rel = f"+{(ms - state.started_wall_ms) / 1000:.0f} s"
    return f"{time.strftime('%H:%M:%S', time.localtime(ms / 1000))} ({rel})" if wall else rel


def _alert_line(state: DemoState, ep: dict[str, Any], *, short: bool = False, wall: bool = True) -> str:
    """One line per alert episode: state, severity, dimension:key, when, and the firing window's numbers."""
    f = ep.get("firing") or {}
    when = f"since {_clock(state, ep['started_at'], wall=wall)}"
    if ep["state"] == "resolved":
        when = f"{_clock(state, ep['started_at'], wall=wall)} -> {_clock(state, ep['resolved_at'], wall=wall)}"
    numbers = (
        f"neg {float(f.get('negative_share') or 0):.2f} vs {float(f.get('baseline_mean') or 0):.2f}  "
        f"z {float(f.get('zscore') or 0):+.1f}" + (f"  n={f.get('count', '?')}" if wall else "")
        if f
        else ""
    )
    head = f"{ep['state'].upper():8} {ep['severity']:8} {ep['dimension']}:{ep['key']}"
    if f.get("derived_from"):  # a topic/all surge one company explains: say which
        head += f" (from {f['derived_from']})"
    return f"{head}  {when}" + ("" if short or not numbers else f"  {numbers}")


def _surge_status(state: DemoState, now: float) -> str:
    """Where the injected surge stands, for the pinned line before its alert fires."""
    elapsed = now - state.started
    start, end = state.surge_start_s, state.surge_start_s + state.surge_duration_s
    if elapsed < start:
        phase = f"starts in {start - elapsed:.0f} s"
    elif elapsed < end:
        phase = f"being injected ({start:.0f}-{end:.0f} s)"
    else:
        phase = f"injected {start:.0f}-{end:.0f} s"
    line = f"entity:{state.surge_key}  no alert yet; negative news surge {phase}"
    with state.lock:
        tr = state.trends.get(("entity", state.surge_key))
    if tr:
        line += (
            f"; last window neg {float(tr.get('negative_share') or 0):.2f} vs "
            f"{float(tr.get('baseline_mean') or 0):.2f}, z {float(tr.get('zscore') or 0):+.1f}, n={tr.get('count')}"
        )
    return line


def render(state: DemoState, width: int, height: int, now: float) -> Any:
    """The live view for a terminal of `width` x `height`, at monotonic time `now`.

    Pure: the same state, size and time give the same lines. Top to bottom:
    one status line; the alerts panel, the surge's alert pinned first with
    its evidence, the others one line each, newest first, then a count of
    those that do not fit; the trends table in the lines left over. The
    whole view stays within `height - SLACK_LINES` lines.
    """
    from rich.console import Group

    with state.lock:
        trends = list(state.trends.values())
    budget = max(height - SLACK_LINES - 1, 5)  # lines below the status line
    panel, panel_lines = _alerts_panel(state, budget, wide=width >= 120, now=now)
    parts: list[Any] = [_status_line(state, now), panel]
    left = budget - panel_lines
    if left >= 4 and trends:
        parts.append(_trends_table(state, trends, rows=left - 3))  # title, header and its rule take 3 lines
    elif trends:
        parts.append(_line(f"trends: {len(trends)} keys (a taller terminal shows the table)", "dim"))
    return Group(*parts)


def _line(text: str, style: str = "") -> Any:
    from rich.text import Text

    return Text(text, style=style, no_wrap=True, overflow="ellipsis")


def _status_line(state: DemoState, now: float) -> Any:
    from rich.text import Text

    with state.lock:
        scored, dead, sent = state.scored, state.deadletters, dict(state.sentiments)
    # Short enough for 80 columns with a few thousand items scored.
    return Text.assemble(
        ("finsent ", "bold"),
        f"{now - state.started:.0f} s  {scored} scored {state.rate():.1f}/s  p50 lag {state.p50_lag_ms() / 1000:.1f} s  ",
        ("neg", "red"),
        f" {sent['negative']} ",
        ("neu", "white"),
        f" {sent['neutral']} ",
        ("pos", "green"),
        f" {sent['positive']}",
        f"  dead letters {dead}" if dead else "",
        no_wrap=True,
        overflow="ellipsis",
    )


def _alerts_panel(state: DemoState, budget: int, *, wide: bool, now: float) -> tuple[Any, int]:
    """The alerts panel and the lines it takes: the surge's alert pinned with its evidence, then the rest."""
    from rich.console import Group
    from rich.panel import Panel

    pinned = state.surge_alert()
    alerts = state.alerts()
    others = [e for e in alerts if e is not pinned]
    # Firing before resolved, newest first: what needs a look now comes first.
    others.sort(key=lambda e: (e["state"] != "firing", -e["started_at"]))
    evidence = list(((pinned or {}).get("firing") or {}).get("evidence") or [])[:EVIDENCE_LINES]
    # The panel takes what it needs, leaving the table 8 lines (5 rows) when the terminal has them.
    inner = max(budget - 8, 3) - 2
    n_evidence = min(len(evidence), max(inner - 1 - (1 if others else 0), 0))
    room = inner - 1 - n_evidence
    if len(others) > room:
        shown, hidden = others[: max(room - 1, 0)], others[max(room - 1, 0) :]
    else:
        shown, hidden = others, []
    body: list[Any] = []
    if pinned is None:
        body.append(_line(_surge_status(state, now), "bold yellow"))
    else:
        colour = "bold red" if pinned["state"] == "firing" else "bold green"
        body.append(_line(_alert_line(state, pinned, wall=wide), colour))
        for ev in evidence[:n_evidence]:
            body.append(_line(f"   {float(ev.get('score') or 0):+.2f}  {' '.join(str(ev.get('text')).split())}"))
    for ep in shown:
        body.append(
            _line(_alert_line(state, ep, short=not wide, wall=wide), "red" if ep["state"] == "firing" else "green")
        )
    if hidden:
        n_firing = sum(e["state"] == "firing" for e in hidden)
        body.append(_line(f"... and {len(hidden)} more alert(s), {n_firing} firing (all listed at the end)", "dim"))
    n_firing = sum(e["state"] == "firing" for e in alerts)
    panel = Panel(
        Group(*body),
        title=f"alerts: {n_firing} firing, {len(alerts) - n_firing} resolved (pinned: the injected surge)",
        title_align="left",
    )
    return panel, len(body) + 2


def _trends_table(state: DemoState, trends: list[dict[str, Any]], rows: int) -> Any:
    """The last closed window of the keys that matter most, at most `rows` of them."""
    from rich import box
    from rich.table import Table

    table = Table(
        title="last closed window per key (negative share vs baseline)",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        expand=True,
        pad_edge=False,
    )
    # Every column but the key keeps its full width; a long topic name is what gets cut.
    widths = {"dimension": 9, "until": 8, "n": 4, "neg": 4, "base": 4, "z": 5, "score": 5}
    for col in ("dimension", "key", "until", "n", "neg", "base", "z", "score"):
        table.add_column(
            col,
            justify="left" if col in ("dimension", "key") else "right",
            no_wrap=True,
            overflow="ellipsis",
            min_width=widths.get(col),
            ratio=1 if col == "key" else None,
        )
    firing_keys = {(e["dimension"], e["key"]) for e in state.alerts() if e["state"] == "firing"}

    def rank(r: dict[str, Any]) -> tuple[int, int, float]:
        # The surge's company, the whole stream, keys firing now, then topics and companies by
        # volume: a z-score on one item is noise, so it does not decide what is shown.
        dim, key = r.get("dimension"), r.get("key")
        if (dim, key) == ("entity", state.surge_key):
            group = 0
        elif dim == "all":
            group = 1
        elif (dim, key) in firing_keys:
            group = 2
        else:
            group = 3 if dim == "topic" else 4
        return (group, -_int(r.get("count")), -float(r.get("zscore") or 0.0))

    for r in sorted(trends, key=rank)[:rows]:
        z = float(r.get("zscore") or 0.0)
        table.add_row(
            str(r.get("dimension")),
            str(r.get("key")),
            time.strftime("%H:%M:%S", time.localtime(_int(r.get("window_end")) / 1000)),
            str(r.get("count")),
            f"{float(r.get('negative_share') or 0):.2f}",
            f"{float(r.get('baseline_mean') or 0):.2f}",
            f"{z:+.1f}",
            f"{float(r.get('mean_score') or 0):+.2f}",
            style="bold red" if z >= SURGE_Z else ("yellow" if z >= SURGE_Z / 2 else ""),
        )
    return table


def summary_lines(state: DemoState) -> list[str]:
    """The end-of-run report: every alert episode with its state and times, then the surge's outcome.

    Every alert, not the last few: the one that matters (the injected
    surge's) is often not the most recent by the time the demo stops.
    """
    alerts = state.alerts()
    out = [f"scored by language: {_languages(state)}"]
    out.append(f"alerts: {len(alerts)} ({sum(e['state'] == 'firing' for e in alerts)} still firing)")
    for ep in alerts:
        resolved = _clock(state, ep["resolved_at"]) if ep["state"] == "resolved" else "-"
        mark = "*" if ep is state.surge_alert() else " "
        derived = (ep.get("firing") or {}).get("derived_from")
        out.append(
            f" {mark} {ep['state']:8} {ep['severity']:8} {ep['dimension']}:{ep['key']}  "
            f"started {_clock(state, ep['started_at'])}  resolved {resolved}"
            + (f"  (from {derived})" if derived else "")
        )
    pinned = state.surge_alert()
    start, end = state.surge_start_s, state.surge_start_s + state.surge_duration_s
    if pinned is None:
        out.append(f"injected surge (entity:{state.surge_key}, {start:.0f}-{end:.0f} s): no alert; see the worker log")
        return out
    f = pinned.get("firing") or {}
    fired_at = _int(f.get("at"))
    after = f", {(fired_at - state.started_wall_ms) / 1000 - start:.0f} s after the surge began" if fired_at else ""
    out.append(
        f"injected surge (* entity:{state.surge_key}, {start:.0f}-{end:.0f} s): alert {pinned['state']}, "
        f"sent at {_clock(state, fired_at)}{after}, {pinned['severity']}, negative share "
        f"{float(f.get('negative_share') or 0):.2f} vs baseline {float(f.get('baseline_mean') or 0):.2f}"
    )
    for ev in (f.get("evidence") or [])[:EVIDENCE_LINES]:
        out.append(f"     {float(ev.get('score') or 0):+.2f}  {' '.join(str(ev.get('text')).split())}")
    return out


def _languages(state: DemoState) -> str:
    with state.lock:
        langs = sorted(state.languages.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{lang} {n}" for lang, n in langs) or "none yet"


def progress_line(state: DemoState, now: float) -> str:
    """The plain (--no-live) progress line: counts and the surge alert's state."""
    alerts = state.alerts()
    pinned = state.surge_alert()
    surge = _alert_line(state, pinned, short=True) if pinned else _surge_status(state, now)
    return (
        f"{now - state.started:5.0f} s  scored {state.scored} ({state.rate():.1f}/s; {_languages(state)})  "
        f"alerts {len(alerts)} "
        f"({sum(e['state'] == 'firing' for e in alerts)} firing)  surge: {surge}"
    )
