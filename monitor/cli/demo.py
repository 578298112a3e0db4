"""`finsent demo`: the whole pipeline on one machine, watched live.

Starts the embedded broker, one worker (a subprocess, as in production),
and two replays of real financial text, news headlines into the news topic
and finance tweets into the comments topic, with an injected surge of
negative news about one company; shows throughput, alerts and trends in a
live terminal view. Settings are tuned for a demo (10 s windows, short
warm-up) so the surge is detected within the first minutes.

The view exists to show one thing: the injected surge's alert. It is
pinned at the top of the alerts panel while it fires and after it
resolves, the alerts panel comes before the trends table, and the table
gets only the lines left over, so an 80x24 terminal shows the alert too.
`render` and `summary_lines` are pure functions of the state (and the
terminal size and time), so tests render them without a broker.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.cli.errors import CliError
from monitor.settings import REPO_ROOT, Settings
from monitor.stream.broker import BrokerError, EmbeddedBroker, free_port, terminate

DEMO_DIR = Path(__file__).parent.parent / "data" / "demo"
DEMO_DATA = DEMO_DIR / "headlines.csv"
DEMO_NEWS = DEMO_DIR / "news.csv"
# Evidence headlines shown under the pinned surge alert (and in the final summary).
EVIDENCE_LINES = 3
# Lines the view leaves free at the bottom: a frame as tall as the terminal scrolls its first line away.
SLACK_LINES = 1


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "demo",
        help="run the self-contained demo (embedded broker + worker + replay with a surge)",
        description=(
            "Start an embedded Kafka-protocol broker, a worker with the shipped model bundle, and replays of "
            "real financial news headlines and tweets with an injected surge of negative news about one "
            "company. A live view shows throughput, the alerts (the surge's alert pinned on top) and trends "
            "per topic and company. At the end it lists every alert. Ctrl-C stops."
        ),
    )
    p.add_argument("--duration", type=float, default=180.0, help="seconds to run (0 = until Ctrl-C; default 180)")
    p.add_argument(
        "--rate", type=float, default=30.0, help="messages per second replayed, half news, half tweets (default 30)"
    )
    p.add_argument("--window", type=float, default=10.0, help="window size in seconds (default 10)")
    p.add_argument("--surge-entity", default="TSLA", help="ticker of the company the surge is about")
    p.add_argument("--surge-start", type=float, default=45.0, help="seconds after start the surge begins")
    p.add_argument("--surge-duration", type=float, default=40.0, help="surge length in seconds")
    p.add_argument(
        "--surge-share", type=float, default=0.3, help="share of the news stream the surge replaces (default 0.3)"
    )
    p.add_argument("--news", type=Path, default=DEMO_NEWS, help="CSV of news headlines to replay (the surge's source)")
    p.add_argument("--data", type=Path, default=DEMO_DATA, help="CSV of tweets to replay into the comments topic")
    p.add_argument("--model", type=Path, help="model bundle directory (default: the shipped bundle)")
    p.add_argument("--workdir", type=Path, default=REPO_ROOT / "var" / "demo", help="logs and state")
    p.add_argument("--no-live", action="store_true", help="print plain progress lines instead of the live view")
    p.add_argument(
        "--broker-log-level",
        metavar="LEVEL",
        help="embedded broker log level: off, error, warn (default), info, debug, trace; info logs every request",
    )
    p.set_defaults(func=run)
    return p


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
    from rich import box
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    def line(text: str, style: str = "") -> Text:
        return Text(text, style=style, no_wrap=True, overflow="ellipsis")

    with state.lock:
        scored, dead, sent = state.scored, state.deadletters, dict(state.sentiments)
        trends = list(state.trends.values())
    # Short enough for 80 columns with a few thousand items scored.
    head = Text.assemble(
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
    budget = max(height - SLACK_LINES - 1, 5)  # lines below the status line

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

    body: list[Text] = []
    wide = width >= 120
    if pinned is None:
        body.append(line(_surge_status(state, now), "bold yellow"))
    else:
        colour = "bold red" if pinned["state"] == "firing" else "bold green"
        body.append(line(_alert_line(state, pinned, wall=wide), colour))
        for ev in evidence[:n_evidence]:
            body.append(line(f"   {float(ev.get('score') or 0):+.2f}  {' '.join(str(ev.get('text')).split())}"))
    for ep in shown:
        body.append(
            line(_alert_line(state, ep, short=not wide, wall=wide), "red" if ep["state"] == "firing" else "green")
        )
    if hidden:
        n_firing = sum(e["state"] == "firing" for e in hidden)
        body.append(line(f"... and {len(hidden)} more alert(s), {n_firing} firing (all listed at the end)", "dim"))
    n_firing = sum(e["state"] == "firing" for e in alerts)
    panel = Panel(
        Group(*body),
        title=f"alerts: {n_firing} firing, {len(alerts) - n_firing} resolved (pinned: the injected surge)",
        title_align="left",
    )

    parts: list[Any] = [head, panel]
    left = budget - (len(body) + 2)
    if left >= 4 and trends:
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

        firing_keys = {(e["dimension"], e["key"]) for e in alerts if e["state"] == "firing"}

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

        rows = sorted(trends, key=rank)[: left - 3]  # title, header and its rule take 3 lines
        for r in rows:
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
                style="bold red" if z >= 3 else ("yellow" if z >= 1.5 else ""),
            )
        parts.append(table)
    elif trends:
        parts.append(line(f"trends: {len(trends)} keys (a taller terminal shows the table)", "dim"))
    return Group(*parts)


def summary_lines(state: DemoState) -> list[str]:
    """The end-of-run report: every alert episode with its state and times, then the surge's outcome.

    Every alert, not the last few: the one that matters (the injected
    surge's) is often not the most recent by the time the demo stops.
    """
    alerts = state.alerts()
    out = [f"alerts: {len(alerts)} ({sum(e['state'] == 'firing' for e in alerts)} still firing)"]
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


def _consume(settings: Settings, state: DemoState, stop: threading.Event) -> None:
    from kafka import KafkaConsumer

    t = settings.topics
    consumer = KafkaConsumer(
        t.scored,
        t.trends,
        t.alerts,
        t.deadletter,
        bootstrap_servers=[settings.kafka.bootstrap],
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    try:
        while not stop.is_set():
            batch = consumer.poll(timeout_ms=300)
            now = time.monotonic()
            for tp, records in batch.items():
                for r in records:
                    try:
                        value = json.loads(r.value)
                    except (ValueError, TypeError):
                        continue
                    if tp.topic == t.scored:
                        state.on_scored(value, now)
                    elif tp.topic == t.trends:
                        state.on_trend(value)
                    elif tp.topic == t.alerts:
                        state.on_alert(value)
                    else:
                        with state.lock:
                            state.deadletters += 1
    finally:
        consumer.close()


def _wait_metrics(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CliError(f"the worker exited during start (code {proc.returncode}); see its log")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if b"finsent_model_loaded 1.0" in resp.read():
                    return
        except OSError:
            time.sleep(0.2)  # not listening yet
        time.sleep(0.3)
    raise CliError(f"the worker did not serve {url} within {timeout:.0f} s; see its log")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console
    from rich.live import Live

    console = Console()
    for path in (args.news, args.data):
        if not path.is_file():
            raise CliError(f"demo data {path} not found")
    if args.rate <= 0:
        raise CliError("--rate must be > 0")
    model = args.model or settings.model.path
    if not (Path(model) / "manifest.json").is_file():
        raise CliError(f"model bundle {model} not found (build one with: finsent-train build)")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    metrics_port = free_port()
    try:
        broker = EmbeddedBroker(log_file=work / "broker.log", log_level=args.broker_log_level)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    worker: subprocess.Popen[bytes] | None = None
    replays: list[subprocess.Popen[bytes]] = []
    stop = threading.Event()
    try:
        try:
            broker.start()
        except BrokerError as exc:
            raise CliError(str(exc)) from None
        demo_settings = settings.model_copy(
            update={"kafka": settings.kafka.model_copy(update={"bootstrap": broker.bootstrap, "profile": "embedded"})}
        )
        broker.create_topics(demo_settings.topics.all_topics(), demo_settings.topics.partitions)
        env = dict(os.environ)
        env.update(
            FINSENT_KAFKA__BOOTSTRAP=broker.bootstrap,
            FINSENT_KAFKA__PROFILE="embedded",
            FINSENT_SURGE__WARMUP_WINDOWS="3",
            FINSENT_SURGE__MIN_VOLUME="8",
            FINSENT_SURGE__COOLDOWN_S="60",
            FINSENT_WINDOWS__ALLOWED_LATENESS_S="2",
            FINSENT_WINDOWS__IDLE_S="3",
        )
        py = sys.executable
        worker_cmd = [
            py, "-m", "monitor.cli", "worker", "--model", str(model), "--window", str(args.window),
            "--metrics-port", str(metrics_port), "--web-port", str(free_port()),
            "--datadir", str(work / "state"), "--app-id", f"finsent-demo-{os.getpid()}", "--no-create-topics",
        ]  # fmt: skip
        with open(work / "worker.log", "wb") as wlog:
            worker = subprocess.Popen(worker_cmd, stdout=wlog, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        console.print(
            f"[bold]finsent demo[/]: broker {broker.bootstrap}, worker starting (log {work / 'worker.log'})",
            soft_wrap=True,
        )
        _wait_metrics(metrics_url, worker, timeout=90)
        console.print(f"worker ready; metrics at {metrics_url}")
        state = DemoState(
            surge_key=args.surge_entity.strip().lstrip("$").upper(),
            surge_start_s=args.surge_start,
            surge_duration_s=args.surge_duration,
        )
        consumer = threading.Thread(target=_consume, args=(demo_settings, state, stop), daemon=True)
        consumer.start()
        news_topic, comments_topic = (demo_settings.topics.inputs * 2)[:2]
        common = ["--rate", str(args.rate / 2), "--loop", "--timestamps", "now", "--quiet"]
        replay_cmds = {
            # News carries the surge: its rows name the company each headline is about.
            "news": [
                py, "-m", "monitor.cli", "replay", str(args.news), "--topic", news_topic, *common,
                "--surge-entity", args.surge_entity, "--surge-start", str(args.surge_start),
                "--surge-duration", str(args.surge_duration), "--surge-share", str(args.surge_share),
            ],
            "comments": [py, "-m", "monitor.cli", "replay", str(args.data), "--topic", comments_topic, *common],
        }  # fmt: skip
        state.started, state.started_wall_ms = time.monotonic(), time.time_ns() // 1_000_000
        for name, cmd in replay_cmds.items():
            with open(work / f"replay-{name}.log", "wb") as rlog:
                replays.append(subprocess.Popen(cmd, stdout=rlog, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT))
        deadline = time.monotonic() + args.duration if args.duration > 0 else float("inf")
        live_view = not args.no_live and console.is_terminal

        def view() -> Any:
            size = console.size
            return render(state, size.width, size.height, time.monotonic())

        last_print = 0.0
        with Live(view(), console=console, refresh_per_second=2, transient=False) if live_view else _NullLive() as live:
            while time.monotonic() < deadline:
                if worker.poll() is not None:
                    raise CliError(f"the worker stopped unexpectedly (code {worker.returncode}); see {work}/worker.log")
                for name, proc in zip(replay_cmds, replays, strict=True):
                    if proc.poll() not in (None, 0):
                        raise CliError(
                            f"the {name} replay stopped (code {proc.returncode}); see {work}/replay-{name}.log"
                        )
                if live_view:
                    live.update(view())
                elif time.monotonic() - last_print >= 10:
                    last_print = time.monotonic()
                    console.print(_progress_line(state, last_print), highlight=False, soft_wrap=True)
                time.sleep(0.5)
        console.print("\n".join(summary_lines(state)), highlight=False, markup=False, soft_wrap=True)
        console.print(
            f"[bold]done[/]: {state.scored} items scored, {state.deadletters} dead letters; logs in {work}",
            highlight=False,
        )
        return 0
    except KeyboardInterrupt:
        console.print("stopping…")
        return 130
    finally:
        stop.set()
        for proc in replays:
            terminate(proc, 5)
        terminate(worker, 15)
        broker.stop()


def _progress_line(state: DemoState, now: float) -> str:
    """The plain (--no-live) progress line: counts and the surge alert's state."""
    alerts = state.alerts()
    pinned = state.surge_alert()
    surge = _alert_line(state, pinned, short=True) if pinned else _surge_status(state, now)
    return (
        f"{now - state.started:5.0f} s  scored {state.scored} ({state.rate():.1f}/s)  alerts {len(alerts)} "
        f"({sum(e['state'] == 'firing' for e in alerts)} firing)  surge: {surge}"
    )


class _NullLive:
    def __enter__(self) -> _NullLive:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, _renderable: Any) -> None:
        return None
