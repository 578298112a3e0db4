"""`finsent demo`: the whole pipeline on one machine, watched live.

Starts the embedded broker, one worker (a subprocess, as in production),
and three replays, English news headlines and Chinese news flashes and
forum comments into the news topic and English finance tweets into the
comments topic, with an injected surge of negative items about one company
(by default a Chinese one, injected into the Chinese stream); shows
throughput per language, alerts and trends in a live terminal view. Settings are tuned for a demo (10 s windows, short
warm-up) so the surge is detected within the first minutes.

What the live view shows, and why, is in monitor/cli/demo_view.py; this
module starts and watches the processes.
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
from pathlib import Path
from typing import Any

from monitor.cli.demo_view import DemoState, progress_line, render, summary_lines
from monitor.cli.errors import CliError
from monitor.core.language import detect_script
from monitor.feed.surges import company_name, surge_key
from monitor.settings import HOME, SOURCE_ROOT, Settings
from monitor.stream.broker import BrokerError, EmbeddedBroker, free_port, terminate

DEMO_DIR = Path(__file__).parent.parent / "data" / "demo"
DEMO_DATA = DEMO_DIR / "headlines.csv"
DEMO_NEWS = DEMO_DIR / "news.csv"
DEMO_ZH = DEMO_DIR / "zh.csv"
SURGE_ENTITY = "002594.SZ"  # BYD: a Chinese company, so the surge travels in the Chinese stream


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "demo",
        help="run the self-contained demo (embedded broker + worker + replay with a surge)",
        description=(
            "Start an embedded Kafka-protocol broker, a worker with the shipped model bundles, and replays of "
            "English news headlines and tweets and Chinese news flashes and forum comments, with an injected "
            "surge of negative items about one company (a Chinese company's surge goes into the Chinese "
            "stream, any other into the English news). A live view shows throughput per language, the alerts "
            "(the surge's alert pinned on top) and trends per topic and company. At the end it lists every "
            "alert. Ctrl-C stops."
        ),
    )
    p.add_argument("--duration", type=float, default=180.0, help="seconds to run (0 = until Ctrl-C; default 180)")
    p.add_argument(
        "--rate",
        type=float,
        default=30.0,
        help="messages per second replayed, a third each English news, tweets, Chinese items (default 30)",
    )
    p.add_argument("--window", type=float, default=10.0, help="window size in seconds (default 10)")
    p.add_argument("--surge-entity", default=SURGE_ENTITY,
                   help=f"watchlist key of the company the surge is about (default {SURGE_ENTITY}, BYD; e.g. TSLA, "
                   "0700.HK, 600519.SH)")  # fmt: skip
    p.add_argument("--surge-start", type=float, default=45.0, help="seconds after start the surge begins")
    p.add_argument("--surge-duration", type=float, default=40.0, help="surge length in seconds")
    p.add_argument(
        "--surge-share",
        type=float,
        default=0.45,
        help="share of the stream carrying the surge that the surge replaces (default 0.45)",
    )
    p.add_argument("--news", type=Path, default=DEMO_NEWS, help="CSV of news headlines to replay (the surge's source)")
    p.add_argument("--data", type=Path, default=DEMO_DATA, help="CSV of tweets to replay into the comments topic")
    p.add_argument("--zh", type=Path, default=DEMO_ZH,
                   help="CSV of Chinese news flashes and forum comments to replay into the news topic")  # fmt: skip
    p.add_argument("--model", type=Path, action="append",
                   help="model bundle directory; repeat for one bundle per language (default: the shipped bundles)")  # fmt: skip
    p.add_argument("--workdir", type=Path, default=HOME / "var" / "demo", help="logs and state")
    p.add_argument("--no-live", action="store_true", help="print plain progress lines instead of the live view")
    p.add_argument(
        "--broker-log-level",
        metavar="LEVEL",
        help="embedded broker log level: off, error, warn (default), info, debug, trace; info logs every request",
    )
    p.set_defaults(func=run)
    return p


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

    console = Console()
    models, surge = _check_inputs(args, settings)
    args = argparse.Namespace(**{**vars(args), "surge_entity": surge})  # the caller's namespace stays as given
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    try:
        broker = EmbeddedBroker(log_file=work / "broker.log", log_level=args.broker_log_level)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    worker: subprocess.Popen[bytes] | None = None
    replays: dict[str, subprocess.Popen[bytes]] = {}
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
        env = _demo_env(broker.bootstrap)
        worker, metrics_url = _start_worker(args, models, work, env)
        console.print(
            f"[bold]finsent demo[/]: broker {broker.bootstrap}, worker starting (log {work / 'worker.log'})",
            soft_wrap=True,
        )
        _wait_metrics(metrics_url, worker, timeout=90)
        console.print(f"worker ready; metrics at {metrics_url}")
        state = DemoState(
            surge_key=args.surge_entity,
            surge_start_s=args.surge_start,
            surge_duration_s=args.surge_duration,
        )
        threading.Thread(target=_consume, args=(demo_settings, state, stop), daemon=True).start()
        state.started, state.started_wall_ms = time.monotonic(), time.time_ns() // 1_000_000
        for name, cmd in _replay_commands(args, demo_settings).items():
            with open(work / f"replay-{name}.log", "wb") as rlog:
                replays[name] = subprocess.Popen(cmd, stdout=rlog, stderr=subprocess.STDOUT, env=env, cwd=SOURCE_ROOT)
        _watch(console, args, state, worker, replays, work)
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
        for proc in replays.values():
            terminate(proc, 5)
        terminate(worker, 15)
        broker.stop()


def _check_inputs(args: argparse.Namespace, settings: Settings) -> tuple[list[Path], str]:
    """The model bundles to serve and the surge's company key, once the demo's files and flags are usable."""
    for path in (args.news, args.data, args.zh):
        if not path.is_file():
            raise CliError(f"demo data {path} not found")
    if args.rate <= 0:
        raise CliError("--rate must be > 0")
    key = surge_key(args.surge_entity)
    if key is None:
        raise CliError(f"--surge-entity {args.surge_entity!r} is not a ticker symbol or stock code")
    models = [Path(m) for m in args.model] if args.model else [Path(settings.model.path), *settings.model.extra]
    for model in models:
        if not (model / "manifest.json").is_file():
            raise CliError(f"model bundle {model} not found (build one with: finsent-train build --recipe english)")
    return models, key


def _demo_env(bootstrap: str) -> dict[str, str]:
    """Settings tuned for a demo: short warm-up and lateness, so the surge is seen within minutes."""
    env = dict(os.environ)
    env.update(
        FINSENT_KAFKA__BOOTSTRAP=bootstrap,
        FINSENT_KAFKA__PROFILE="embedded",
        FINSENT_SURGE__WARMUP_WINDOWS="3",
        FINSENT_SURGE__MIN_VOLUME="8",
        FINSENT_SURGE__COOLDOWN_S="60",
        FINSENT_WINDOWS__ALLOWED_LATENESS_S="2",
        FINSENT_WINDOWS__IDLE_S="3",
    )
    return env


def _start_worker(
    args: argparse.Namespace, models: list[Path], work: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str]:
    metrics_port = free_port()
    cmd = [
        sys.executable, "-m", "monitor.cli", "worker", *(a for m in models for a in ("--model", str(m))),
        "--window", str(args.window),
        "--metrics-port", str(metrics_port), "--web-port", str(free_port()),
        "--datadir", str(work / "state"), "--app-id", f"finsent-demo-{os.getpid()}", "--no-create-topics",
    ]  # fmt: skip
    with open(work / "worker.log", "wb") as wlog:
        proc = subprocess.Popen(cmd, stdout=wlog, stderr=subprocess.STDOUT, env=env, cwd=SOURCE_ROOT)
    return proc, f"http://127.0.0.1:{metrics_port}/metrics"


def _replay_commands(args: argparse.Namespace, settings: Settings) -> dict[str, list[str]]:
    """One replay per stream; the surge rides in the stream whose language the company's name is written in."""
    py = sys.executable
    news_topic, comments_topic = (settings.topics.inputs * 2)[:2]
    common = ["--rate", str(args.rate / 3), "--loop", "--timestamps", "now", "--quiet"]
    surge = [
        "--surge-entity", args.surge_entity, "--surge-start", str(args.surge_start),
        "--surge-duration", str(args.surge_duration), "--surge-share", str(args.surge_share),
    ]  # fmt: skip
    carrier = "zh" if detect_script(company_name(args.surge_entity)) == "zh" else "news"
    files = {"news": (args.news, news_topic), "comments": (args.data, comments_topic), "zh": (args.zh, news_topic)}
    return {
        name: [py, "-m", "monitor.cli", "replay", str(path), "--topic", topic, *common,
               *(surge if name == carrier else [])]
        for name, (path, topic) in files.items()
    }  # fmt: skip


def _watch(
    console: Any,
    args: argparse.Namespace,
    state: DemoState,
    worker: subprocess.Popen[bytes],
    replays: dict[str, subprocess.Popen[bytes]],
    work: Path,
) -> None:
    """Show the live view (or a progress line every 10 s) until the duration is up or a process dies."""
    from rich.live import Live

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
            for name, proc in replays.items():
                if proc.poll() not in (None, 0):
                    raise CliError(f"the {name} replay stopped (code {proc.returncode}); see {work}/replay-{name}.log")
            if live_view:
                live.update(view())
            elif time.monotonic() - last_print >= 10:
                last_print = time.monotonic()
                console.print(progress_line(state, last_print), highlight=False, soft_wrap=True)
            time.sleep(0.5)


class _NullLive:
    def __enter__(self) -> _NullLive:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, _renderable: Any) -> None:
        return None
