"""Real Prometheus and Alertmanager processes on loopback, plus a webhook receiver, for tests."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from monitor.stream.broker import free_port

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def fast_rules(dst: Path, for_duration: str = "2s") -> Path:
    """The production alert rules with every `for:` shortened, so an end-to-end test takes seconds."""
    text = (DEPLOY / "prometheus" / "rules" / "finsent-alerts.yml").read_text()
    dst.write_text(re.sub(r"(?m)^(\s+for:\s*)\S+", rf"\g<1>{for_duration}", text))
    return dst


class Webhook:
    """Collects Alertmanager webhook posts."""

    def __init__(self) -> None:
        self.posts: list[tuple[float, dict[str, Any]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.posts.append((time.monotonic(), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alertmanager"

    def alerts(self) -> list[tuple[float, str, dict[str, Any]]]:
        """(arrival time, status, alert) for every alert in every post."""
        return [(t, a["status"], a) for t, p in self.posts for a in p.get("alerts", [])]

    def close(self) -> None:
        self.server.shutdown()


class Proc:
    def __init__(self, cmd: list[str], log: Path, ready_url: str) -> None:
        self.log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(ready_url, timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{cmd[0]} not ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def start_alertmanager(workdir: Path, webhook_url: str, *more_urls: str) -> tuple[Proc, int]:
    port = free_port()
    cfg = workdir / "alertmanager.yml"
    cfg.write_text(
        "route:\n  receiver: hook\n  group_by: [alertname, dimension]\n  group_wait: 0s\n  group_interval: 1s\n"
        "  repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs:\n"
        + "".join(f"      - url: {u}\n        send_resolved: true\n" for u in (webhook_url, *more_urls))
    )
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager") or "prometheus-alertmanager"
    cmd = [binary, f"--config.file={cfg}", f"--storage.path={workdir / 'am-data'}",
           f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="]  # fmt: skip
    return Proc(cmd, workdir / "alertmanager.log", f"http://127.0.0.1:{port}/-/ready"), port


def start_prometheus(workdir: Path, targets: list[str], am_port: int | None, rules: list[Path]) -> tuple[Proc, int]:
    port = free_port()
    cfg = workdir / "prometheus.yml"
    lines = ["global:", "  scrape_interval: 1s", "  evaluation_interval: 1s", "rule_files:"]
    lines += [f"  - {r}" for r in rules]
    if am_port:
        lines += [
            "alerting:",
            "  alertmanagers:",
            "    - static_configs:",
            f"        - targets: ['127.0.0.1:{am_port}']",
        ]
    lines += [
        "scrape_configs:",
        "  - job_name: finsent",
        "    static_configs:",
        f"      - targets: {json.dumps(targets)}",
    ]
    cfg.write_text("\n".join(lines) + "\n")
    cmd = ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={workdir / 'prom-data'}",
           f"--web.listen-address=127.0.0.1:{port}"]  # fmt: skip
    return Proc(cmd, workdir / "prometheus.log", f"http://127.0.0.1:{port}/-/ready"), port


def prom_query(port: int, expr: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.loads(r.read())
    if body.get("status") != "success":
        raise ValueError(f"query failed: {expr}: {body}")
    return body["data"]["result"]


import urllib.parse  # noqa: E402
