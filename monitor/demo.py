"""`finsent demo`: the whole pipeline on one machine, watched live.

Starts the embedded broker, one worker (a subprocess, as in production),
and a replay of real financial headlines with an injected negative surge
about one company; shows throughput, trends and alerts in a live terminal
view. Settings are tuned for a demo (10 s windows, short warm-up) so the
surge is detected within the first minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.broker import BrokerError, EmbeddedBroker, free_port
from monitor.cli import CliError
from monitor.settings import REPO_ROOT, Settings

DEMO_DATA = Path(__file__).parent / "data" / "demo" / "headlines.csv"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "demo",
        help="run the self-contained demo (embedded broker + worker + replay with a surge)",
        description=(
            "Start an embedded Kafka-protocol broker, a worker with the shipped model bundle, and a replay "
            "of real financial headlines with an injected negative surge about one company. A live view "
            "shows throughput, trends per topic and company, and the surge alert when it fires. Ctrl-C stops."
        ),
    )
    p.add_argument("--duration", type=float, default=180.0, help="seconds to run (0 = until Ctrl-C; default 180)")
    p.add_argument("--rate", type=float, default=30.0, help="messages per second replayed (default 30)")
    p.add_argument("--window", type=float, default=10.0, help="window size in seconds (default 10)")
    p.add_argument("--surge-entity", default="TSLA", help="ticker of the company the surge is about")
    p.add_argument("--surge-start", type=float, default=45.0, help="seconds after start the surge begins")
    p.add_argument("--surge-duration", type=float, default=40.0, help="surge length in seconds")
    p.add_argument("--surge-share", type=float, default=0.3, help="share of the stream the surge replaces")
    p.add_argument("--data", type=Path, default=DEMO_DATA, help="CSV of headlines to replay")
    p.add_argument("--model", type=Path, help="model bundle directory (default: the shipped bundle)")
    p.add_argument("--workdir", type=Path, default=REPO_ROOT / "var" / "demo", help="logs and state")
    p.add_argument("--no-live", action="store_true", help="print plain progress lines instead of the live view")
    p.set_defaults(func=run)
    return p


@dataclass
class DemoState:
    """What the live view shows; fed by the consumer thread, read by the renderer."""

    started: float = field(default_factory=time.monotonic)
    scored: int = 0
    deadletters: int = 0
    sentiments: dict[str, int] = field(default_factory=lambda: {"negative": 0, "neutral": 0, "positive": 0})
    recent_rate: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=50))
    trends: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)
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
        with self.lock:
            self.alerts.append(rec)

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

    def firing(self) -> list[dict[str, Any]]:
        with self.lock:
            return [a for a in self.alerts if a.get("state") == "firing"]


def render(state: DemoState, metrics_url: str, surge_entity: str) -> Any:
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    elapsed = time.monotonic() - state.started
    head = Text.assemble(
        ("finsent demo ", "bold"),
        f"{elapsed:5.0f} s  scored {state.scored}  ({state.rate():.1f}/s)  p50 lag {state.p50_lag_ms():.0f} ms  ",
        ("neg ", "red"),
        f"{state.sentiments['negative']}  ",
        ("neu ", "white"),
        f"{state.sentiments['neutral']}  ",
        ("pos ", "green"),
        f"{state.sentiments['positive']}   metrics {metrics_url}",
    )
    table = Table(title="last closed window per key (negative share vs baseline)", expand=True)
    for col in ("dimension", "key", "window end", "count", "neg share", "baseline", "z", "mean score"):
        table.add_column(col, justify="right" if col not in ("dimension", "key") else "left")
    with state.lock:
        rows = sorted(state.trends.values(), key=lambda r: (r.get("dimension") != "all", -int(r.get("count", 0))))
    shown = [r for r in rows if r.get("dimension") in ("all", "topic")][:12]
    shown += [r for r in rows if r.get("dimension") == "entity" and r.get("key") == surge_entity]
    shown += [r for r in rows if r.get("dimension") == "entity" and r.get("key") != surge_entity][:4]
    for r in shown:
        z = float(r.get("zscore") or 0.0)
        style = "bold red" if z >= 3 else ("yellow" if z >= 1.5 else "")
        table.add_row(
            str(r.get("dimension")),
            str(r.get("key")),
            time.strftime("%H:%M:%S", time.localtime(int(r.get("window_end", 0)) / 1000)),
            str(r.get("count")),
            f"{float(r.get('negative_share') or 0):.2f}",
            f"{float(r.get('baseline_mean') or 0):.2f}",
            f"{z:+.1f}",
            f"{float(r.get('mean_score') or 0):+.2f}",
            style=style,
        )
    alert_lines: list[Any] = []
    with state.lock:
        recent = state.alerts[-4:]
    for a in recent:
        colour = "bold red" if a.get("state") == "firing" else "bold green"
        alert_lines.append(
            Text(
                f"{a.get('state', '?').upper():9} {a.get('severity', '')} {a.get('dimension')}:{a.get('key')}  "
                f"neg share {float(a.get('negative_share') or 0):.2f} vs baseline "
                f"{float(a.get('baseline_mean') or 0):.2f}  z {float(a.get('zscore') or 0):+.1f}  n={a.get('count')}",
                style=colour,
            )
        )
        for ev in (a.get("evidence") or [])[:3]:
            alert_lines.append(Text(f"    {float(ev.get('score') or 0):+.2f}  {str(ev.get('text'))[:110]}"))
    if not alert_lines:
        alert_lines.append(Text(f"no alert yet (surge about {surge_entity} is injected after the warm-up)"))
    return Group(head, table, Panel(Group(*alert_lines), title="alerts (finsent.alerts)"))


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


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console
    from rich.live import Live

    console = Console()
    if not args.data.is_file():
        raise CliError(f"demo data {args.data} not found")
    model = args.model or settings.model.path
    if not (Path(model) / "manifest.json").is_file():
        raise CliError(f"model bundle {model} not found (build one with: finsent-train build)")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    metrics_port = free_port()
    broker = EmbeddedBroker(log_file=work / "broker.log")
    worker: subprocess.Popen[bytes] | None = None
    replay: subprocess.Popen[bytes] | None = None
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
        console.print(f"[bold]finsent demo[/]: broker {broker.bootstrap}, worker starting (log {work / 'worker.log'})")
        _wait_metrics(metrics_url, worker, timeout=90)
        consumer = threading.Thread(target=_consume, args=(demo_settings, state := DemoState(), stop), daemon=True)
        consumer.start()
        replay_cmd = [
            py, "-m", "monitor.cli", "replay", str(args.data), "--topic", demo_settings.topics.inputs[0],
            "--rate", str(args.rate), "--loop", "--timestamps", "now", "--quiet",
            "--surge-entity", args.surge_entity, "--surge-start", str(args.surge_start),
            "--surge-duration", str(args.surge_duration), "--surge-share", str(args.surge_share),
        ]  # fmt: skip
        with open(work / "replay.log", "wb") as rlog:
            replay = subprocess.Popen(replay_cmd, stdout=rlog, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
        deadline = time.monotonic() + args.duration if args.duration > 0 else float("inf")
        live_view = not args.no_live and console.is_terminal
        last_print = 0.0
        with Live(render(state, metrics_url, args.surge_entity), console=console, refresh_per_second=2,
                  transient=False) if live_view else _NullLive() as live:  # fmt: skip
            while time.monotonic() < deadline:
                if worker.poll() is not None:
                    raise CliError(f"the worker stopped unexpectedly (code {worker.returncode}); see {work}/worker.log")
                if replay.poll() not in (None, 0):
                    raise CliError(f"the replay stopped (code {replay.returncode}); see {work}/replay.log")
                if live_view:
                    live.update(render(state, metrics_url, args.surge_entity))
                elif time.monotonic() - last_print >= 10:
                    last_print = time.monotonic()
                    firing = state.firing()
                    console.print(
                        f"{time.monotonic() - state.started:5.0f} s  scored {state.scored} ({state.rate():.1f}/s)  "
                        f"alerts firing so far: {len(firing)}"
                        + (f"  latest: {firing[-1].get('dimension')}:{firing[-1].get('key')}" if firing else "")
                    )
                time.sleep(0.5)
        console.print(render(state, metrics_url, args.surge_entity))
        fired = state.firing()
        console.print(
            f"[bold]done[/]: {state.scored} items scored, {state.deadletters} dead letters, "
            f"{len(fired)} surge alert(s) fired: " + ", ".join(f"{a.get('dimension')}:{a.get('key')}" for a in fired)
        )
        return 0
    except KeyboardInterrupt:
        console.print("stopping…")
        return 130
    finally:
        stop.set()
        _stop(replay, 5)
        _stop(worker)
        broker.stop()


class _NullLive:
    def __enter__(self) -> _NullLive:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, _renderable: Any) -> None:
        return None
