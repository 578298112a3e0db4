"""The whole alert path end to end: worker -> Prometheus -> Alertmanager -> notifier -> webhook.

Static checks of the deploy files (promtool, amtool, dashboards, compose) are in tests/test_deploy_*.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy.grafana import dashboards
from monitor.stream.broker import free_port
from monitor.testing import BROKER_KINDS, TopicNames, WorkerProcess, make_topics, open_broker, produce
from tests.observability import DEPLOY, Webhook, fast_rules, prom_query, start_alertmanager, start_prometheus
from tests.tiny_bundle import make_bundle

NEEDS = ("promtool", "amtool", "prometheus", "prometheus-alertmanager")
missing = [b for b in NEEDS if shutil.which(b) is None]
if missing and os.environ.get("CI"):
    raise RuntimeError(f"CI needs {missing}: run scripts/install-observability.sh")
pytestmark = pytest.mark.skipif(bool(missing), reason=f"not installed: {missing} (scripts/install-observability.sh)")


def run(cmd: list[str], cwd: Path | None = None) -> str:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout + r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("kind", BROKER_KINDS)
def test_surge_reaches_webhook_and_resolves_quiet_stream_fires_nothing(kind: str, tmp_path: Path) -> None:
    hook, notified = Webhook(), Webhook()
    topics = TopicNames()
    notify_port = free_port()
    am, am_port = start_alertmanager(tmp_path, hook.url, f"http://127.0.0.1:{notify_port}/alertmanager")
    env = {
        "FINSENT_WINDOWS__SIZE_S": "1", "FINSENT_WINDOWS__ALLOWED_LATENESS_S": "1", "FINSENT_WINDOWS__IDLE_S": "1",
        "FINSENT_WINDOWS__TICK_INTERVAL_S": "0.5", "FINSENT_SURGE__WARMUP_WINDOWS": "3",
        "FINSENT_SURGE__MIN_VOLUME": "20", "FINSENT_SURGE__COOLDOWN_S": "600", "FINSENT_MODEL__RELOAD_INTERVAL_S": "1",
    }  # fmt: skip
    worker = prom = None
    notifier: subprocess.Popen[bytes] | None = None
    try:
        with open_broker(kind, tmp_path) as broker:
            make_topics(broker.bootstrap, topics)
            notifier = subprocess.Popen(
                [sys.executable, "-m", "monitor.cli", "notify", "--listen", f"127.0.0.1:{notify_port}",
                 "--forward", notified.url],
                env={**os.environ, **topics.env(), "FINSENT_KAFKA__BOOTSTRAP": broker.bootstrap},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            worker = WorkerProcess(broker, topics, make_bundle(tmp_path / "tiny"), tmp_path, env=env).start()
            prom, prom_port = start_prometheus(
                tmp_path,
                [f"127.0.0.1:{worker.metrics_port}"],
                am_port,
                [fast_rules(tmp_path / "alerts.yml"), DEPLOY / "prometheus" / "rules" / "finsent-recording.yml"],
            )
            # Per second: 30 items about SURGE and 30 about QUIET; SURGE turns 80% negative for 4 s.
            plan = ["calm"] * 6 + ["surge"] * 4 + ["calm"] * 8
            surge_started = None
            for sec, phase in enumerate(plan):
                if phase == "surge" and surge_started is None:
                    surge_started = time.monotonic()
                items = []
                for i in range(30):
                    neg_surge = i < (24 if phase == "surge" else 3)
                    items.append({"id": f"s{sec}-{i}", "text": "shares plunge fraud" if neg_surge else "the company",
                                  "tickers": ["SURGE"]})  # fmt: skip
                    items.append({"id": f"q{sec}-{i}", "text": "shares plunge fraud" if i < 3 else "the company",
                                  "tickers": ["QUIET"]})  # fmt: skip
                t0 = time.monotonic()
                produce(broker.bootstrap, topics.news, [*items, b"not json"] if sec == 0 else items)
                time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                states = [(s, a["labels"].get("key")) for _, s, a in hook.alerts()]
                if ("resolved", "SURGE") in states:
                    break
                time.sleep(0.5)
            got = [(t, s, a) for t, s, a in hook.alerts() if a["labels"]["alertname"] == "NegativeSentimentSurge"]
            firing = [(t, a) for t, s, a in got if s == "firing" and a["labels"]["key"] == "SURGE"]
            resolved = [a for _, s, a in got if s == "resolved" and a["labels"]["key"] == "SURGE"]
            assert firing, f"no firing notification; posts={hook.posts}\n{worker.log_tail()}"
            assert resolved, f"no resolution; posts={hook.posts}"
            assert not [a for _, _, a in got if a["labels"]["key"] == "QUIET"]
            first = firing[0][1]
            assert first["labels"]["dimension"] == "entity"
            assert "SURGE" in first["annotations"]["summary"] and "z-score" in first["annotations"]["description"]
            assert "var-entity=SURGE" in first["annotations"]["dashboard"]
            delay = firing[0][0] - (surge_started or 0)
            print(f"\nsurge start -> webhook firing: {delay:.1f} s (window 1 s, scrape 1 s, eval 1 s, for 2s)")
            # The notifier forwarded one readable message with the evidence headlines.
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not any(p.get("status") == "firing" for _, p in notified.posts):
                time.sleep(0.3)
            msgs = [p for _, p in notified.posts if p.get("key") == "SURGE" and p.get("status") == "firing"]
            assert msgs, notified.posts
            text = msgs[0]["text"]
            assert "SURGE" in text and "z-score" in text and "negative share" in text and "plunge" in text, text
            assert msgs[0]["evidence"] and all("plunge" in e["text"] for e in msgs[0]["evidence"])
            # Recording rules and every dashboard panel's query return data from the real worker's series.
            assert prom_query(prom_port, "finsent:throughput:rate1m")
            assert prom_query(prom_port, 'finsent:negative_share:by_key{dimension="entity",key="QUIET"}')
            empty = []
            for name, fn in dashboards.DASHBOARDS.items():
                for title, expr in dashboards.panel_queries(fn(), {"dimension": "entity", "entity": "SURGE"}):
                    if not prom_query(prom_port, expr):
                        empty.append(f"{name}: {title}: {expr}")
            assert not empty, "panels without data:\n" + "\n".join(empty)
    finally:
        if notifier is not None:
            notifier.terminate()
            notifier.wait(10)
        notified.close()
        for p in (prom, am):
            if p:
                p.stop()
        if worker:
            worker.stop()
        hook.close()
