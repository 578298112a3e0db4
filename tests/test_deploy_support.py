"""Shared helpers for the deploy tests (no tests here; named test_deploy_* to sit with the files that use it).

Real Prometheus / Alertmanager processes on free loopback ports, a webhook
receiver, and the rule "missing tool: skip locally, fail in CI" so a CI run can
never go green by skipping the checks that matter.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
PROM_DIR = DEPLOY / "prometheus"
ALERT_RULES = PROM_DIR / "rules" / "finsent-alerts.yml"
RECORDING_RULES = PROM_DIR / "rules" / "finsent-recording.yml"
AM_DIR = DEPLOY / "alertmanager"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
INSTALL_HINT = "run scripts/install-observability.sh"


def need(binary: str) -> str:
    """Path of a required tool; skip when absent locally, fail in CI (where a skip would hide a broken check)."""
    path = shutil.which(binary)
    if path:
        return path
    msg = f"{binary} not installed ({INSTALL_HINT})"
    if IN_CI:
        pytest.fail(f"CI needs {msg}")
    pytest.skip(msg)


def alertmanager_binary() -> str:
    """Debian names the server prometheus-alertmanager; upstream tarballs name it alertmanager."""
    if shutil.which("prometheus-alertmanager"):
        return need("prometheus-alertmanager")
    return need("alertmanager")


def run(cmd: list[str], cwd: Path | None = None, timeout: float = 60) -> str:
    """Run a checker; on failure show its whole output (promtool and amtool explain themselves)."""
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"{' '.join(cmd)} failed (rc={r.returncode}):\n{out}"
    return out


def free_port() -> int:
    """A port the kernel just handed out on loopback (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(url: str, body: Any = None, timeout: float = 5) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
    return json.loads(raw) if raw else None


@contextmanager
def process(cmd: list[str], log: Path, ready_url: str, timeout: float = 20) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server, wait until ready_url answers, and always stop it (SIGTERM, then SIGKILL)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{cmd[0]} exited rc={proc.returncode}:\n{log.read_text()[-3000:]}")
                try:
                    with urllib.request.urlopen(ready_url, timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{cmd[0]} not ready in {timeout}s:\n{log.read_text()[-3000:]}") from None
                    time.sleep(0.05)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@contextmanager
def prometheus(
    workdir: Path,
    targets: list[str],
    rule_files: list[Path],
    interval: str = "1s",
    am_port: int | None = None,
    jobs: list[dict[str, Any]] | None = None,
) -> Iterator[int]:
    """A real Prometheus on a free loopback port scraping `targets` as job finsent; yields its port.

    `jobs` replaces that job with these scrape configs (scheme, tls_config, ... as Prometheus spells them).
    """
    port = free_port()
    cfg: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": jobs or [{"job_name": "finsent", "static_configs": [{"targets": targets}]}],
    }
    if am_port:
        cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]}
    path = workdir / "prometheus.yml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    cmd = [need("prometheus"), f"--config.file={path}", f"--storage.tsdb.path={workdir / 'prom-data'}",
           f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]  # fmt: skip
    with process(cmd, workdir / "prometheus.log", f"http://127.0.0.1:{port}/-/ready"):
        yield port


@contextmanager
def alertmanager(workdir: Path, config_text: str) -> Iterator[int]:
    """A real Alertmanager (no clustering) on a free loopback port; yields its port."""
    port = free_port()
    path = workdir / "alertmanager.yml"
    path.write_text(config_text)
    cmd = [alertmanager_binary(), f"--config.file={path}", f"--storage.path={workdir / 'am-data'}",
           f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=warn"]  # fmt: skip
    with process(cmd, workdir / "alertmanager.log", f"http://127.0.0.1:{port}/-/ready"):
        yield port


def prom_query(port: int, expr: str) -> list[dict[str, Any]]:
    """Instant query; raises on a PromQL error (so a typo fails loudly, not as 'no data')."""
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        body = http_json(url)
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"query rejected: {expr}\n{exc.read().decode(errors='replace')}") from None
    assert body.get("status") == "success", f"query failed: {expr}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


class Webhook:
    """Collects Alertmanager webhook POSTs on a free loopback port."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    outer.posts.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alertmanager"

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.posts)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll until predicate() is truthy; its last value is returned, or the test fails naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# Sample worker metrics: what a worker in the middle of a company surge exposes.
TOPICS = ("Earnings", "Markets", "M&A")
ENTITIES = ("AAPL", "TSLA", "MSFT")
SURGE_ENTITY = "AAPL"
SURGE_TOPIC = "Earnings"


@contextmanager
def sample_worker_metrics() -> Iterator[str]:
    """Serve the worker's real metric set (monitor.stream.metrics.Metrics) with live sample values; yields host:port.

    Why the worker's own Metrics class and not hand-written names: the dashboards
    and rules are then checked against the names and types the worker really
    exports. Counters and histograms keep moving (a background thread), so rate()
    panels return non-zero data. AAPL and the Earnings topic are in a surge.
    """
    from prometheus_client import Gauge, start_http_server

    from monitor.stream.metrics import Metrics

    m = Metrics()
    faust_rebalances = Gauge("faust_total_rebalances", "Total rebalances", registry=m.registry)
    faust_rebalances.set(2)
    m.set_model("finsent-minilm-l6", "2026.11.1", "9f" * 32)
    windows = [("all", "all", 0.2, 300)]
    windows += [("topic", t, 0.7 if t == SURGE_TOPIC else 0.15, 60) for t in TOPICS]
    windows += [("entity", e, 0.8 if e == SURGE_ENTITY else 0.1, 40) for e in ENTITIES]
    for dim, key, share, count in windows:
        m.negative_share.labels(dim, key).set(share)
        m.sentiment_mean.labels(dim, key).set(0.3 - share)
        m.window_count.labels(dim, key).set(count)
        m.baseline.labels(dim, key).set(0.12)
        m.zscore.labels(dim, key).set((share - 0.12) / 0.05)
        surging = key in (SURGE_ENTITY, SURGE_TOPIC)
        m.surge_active.labels(dim, key, "critical").set(1 if surging else 0)
    m.alerts.labels("entity", "critical").inc()
    m.alerts.labels("topic", "critical").inc()
    stop = threading.Event()

    def churn() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            for stream in ("finsent.news", "finsent.comments"):
                for topic in TOPICS:
                    for sentiment in ("negative", "neutral", "positive"):
                        for lang in ("en", "zh"):
                            m.messages.labels(stream, topic, sentiment, lang).inc(1 + (i + len(topic)) % 3)
                m.consumer_lag.labels(stream, "0").set(i % 7)
            m.invalid.labels("not_json").inc()
            m.deadletter.labels("not_json").inc()
            m.scoring_seconds.observe(0.02 + (i % 5) / 100)
            m.batch_size.observe(8 + i % 16)
            m.lag.observe(0.1 + (i % 10) / 10)
            m.last_scored.set(time.time())
            stop.wait(0.1)

    server, _thread = start_http_server(0, addr="127.0.0.1", registry=m.registry)
    churner = threading.Thread(target=churn, daemon=True)
    churner.start()
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        stop.set()
        churner.join(5)
        server.shutdown()
        server.server_close()
