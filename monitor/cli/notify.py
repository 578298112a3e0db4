"""`finsent notify`: turns Alertmanager webhooks into notifications a risk analyst can act on.

Prometheus knows numbers, not headlines. This receiver keeps the latest
in-stream alert per `dimension:key` from the alerts topic (which carries
the evidence: the most negative items) and, for each alert Alertmanager
posts, forwards one message with the company or topic, negative share vs
baseline, z-score, volume, window and the evidence headlines — to a
Slack-compatible webhook (`{"text": ...}` plus structured fields), and as
a JSON line on stdout.

Anyone who can reach the receiver can make it notify the risk desk, so a
shared bearer token (from a file, or the environment) gates every webhook:
Alertmanager sends it with `http_config.authorization`. Refused posts are
counted in `finsent_notify_rejected_total`, served on the receiver's own
GET /metrics.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import os
import re
import threading
import time
import urllib.request
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from monitor.cli.errors import CliError, kafka_unreachable
from monitor.settings import Settings
from monitor.stream.clients import BOOTSTRAP_TIMEOUT_MS, is_unreachable

log = logging.getLogger(__name__)

TOKEN_ENV = "FINSENT_NOTIFY_TOKEN"
TOKEN_FILE_ENV = "FINSENT_NOTIFY_TOKEN_FILE"
REJECT_REASONS = ("missing", "wrong")
# Up to this much of a refused post's body is read before answering: a client still sending when the
# connection closes may see a reset instead of the 401, and an unauthenticated client gets no more.
REFUSED_BODY_LIMIT = 64 * 1024


def _ts(ms: Any) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(int(ms) / 1000))
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


def format_notification(am_alert: dict[str, Any], finsent_alert: dict[str, Any] | None) -> dict[str, Any]:
    """One message from an Alertmanager alert and, when known, the worker's alert with evidence."""
    labels = am_alert.get("labels", {})
    ann = am_alert.get("annotations", {})
    status = am_alert.get("status", "firing")
    name = labels.get("alertname", "alert")
    dim, key = labels.get("dimension", ""), labels.get("key", "")
    lines = [f"[{status.upper()}] {name} {dim} {key} ({labels.get('severity', '')})".replace("  ", " ").strip()]
    if ann.get("summary"):
        lines.append(ann["summary"])
    evidence: list[dict[str, Any]] = []
    if finsent_alert:
        fa = finsent_alert
        lines.append(
            f"negative share {float(fa.get('negative_share') or 0):.0%} vs baseline "
            f"{float(fa.get('baseline_mean') or 0):.0%}, z-score {float(fa.get('zscore') or 0):.1f}, "
            f"{fa.get('count')} items in window {_ts(fa.get('window_start'))} - {_ts(fa.get('window_end'))}"
        )
        evidence = list(fa.get("evidence") or [])
        if evidence and status == "firing":
            lines.append("Most negative items:")
            for e in evidence:
                src = f" ({e.get('source')})" if e.get("source") else ""
                url = f" {e.get('url')}" if e.get("url") else ""
                lines.append(
                    f"  {float(e.get('score') or 0):+.2f} {str(e.get('title') or e.get('text'))[:200]}{src}{url}"
                )
    elif ann.get("description"):
        lines.append(ann["description"])
    if ann.get("dashboard"):
        lines.append(f"Dashboard: {ann['dashboard']}")
    return {"text": "\n".join(lines), "status": status, "alertname": name, "dimension": dim, "key": key,
            "severity": labels.get("severity"), "evidence": evidence}  # fmt: skip


class AlertCache:
    """Latest worker alert per dimension:key, fed from the alerts topic."""

    def __init__(self) -> None:
        self._latest: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def put(self, alert: dict[str, Any]) -> None:
        k = (str(alert.get("dimension")), str(alert.get("key")))
        with self._lock:
            prev = self._latest.get(k)
            # A resolution keeps the firing alert's evidence for the resolved notice.
            if alert.get("state") == "resolved" and prev and not alert.get("evidence"):
                alert = {**alert, "evidence": prev.get("evidence", [])}
            self._latest[k] = alert

    def get(self, dimension: str, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._latest.get((dimension, key))


def alerts_consumer(settings: Settings) -> Any:
    """A kafka-python consumer of the alerts topic from its start, connected (or a one-line CliError).

    Connecting before the webhook server starts makes an unreachable broker
    a start-up error (exit 2, one line) instead of a notifier that runs on
    without the evidence headlines it exists to add.
    """
    from kafka import KafkaConsumer

    try:
        return KafkaConsumer(settings.topics.alerts, **settings.kafka.kafka_python_config(), group_id=None,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS)  # fmt: skip
    except Exception as exc:
        if is_unreachable(exc):
            raise kafka_unreachable(settings) from None
        raise CliError(
            f"cannot read topic {settings.topics.alerts} on Kafka at {settings.kafka.bootstrap}: {exc}"
        ) from None


def follow_alerts(settings: Settings, cache: AlertCache, stop: threading.Event, consumer: Any = None) -> None:
    """Feed `cache` from the alerts topic until `stop`; `consumer` None connects one here."""
    if consumer is None:
        consumer = alerts_consumer(settings)
    try:
        while not stop.is_set():
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    try:
                        cache.put(json.loads(r.value))
                    except (ValueError, TypeError):
                        continue
    finally:
        consumer.close()


def deliver(message: dict[str, Any], forward: str | None) -> None:
    print(json.dumps(message, ensure_ascii=False), flush=True)
    if not forward:
        return
    req = urllib.request.Request(
        forward, data=json.dumps(message).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
    except OSError as exc:
        log.error("forwarding notification to %s failed: %s", forward, exc)


def load_token(token_file: str | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """The bearer token webhooks must carry, from `token_file` or FINSENT_NOTIFY_TOKEN; None when neither is set.

    A file keeps the secret out of process listings and `docker inspect`.
    Whitespace around it is dropped, as Alertmanager drops it from its
    `credentials_file`, so a trailing newline in the file cannot make the
    two sides disagree. Two sources at once are refused rather than one of
    them silently ignored.
    """
    value = environ.get(TOKEN_ENV, "").strip() or None
    if token_file and value is not None:
        raise CliError(f"a token file ({token_file}) and {TOKEN_ENV} are both set: keep one")
    where = TOKEN_ENV
    if token_file:
        where = f"token file {token_file}"
        try:
            value = Path(token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise CliError(f"cannot read {where}: {reason}") from None
        if not value:
            raise CliError(f"{where} is empty")
    if value is not None and not re.fullmatch(r"[!-~]+", value):
        # Bearer credentials are one word of printable ASCII (an HTTP header cannot carry more reliably).
        raise CliError(f"{where} must hold one word of printable ASCII, e.g. from 'openssl rand -hex 32'")
    return value


def check_bearer(authorization: str | None, token: str) -> str | None:
    """None when the Authorization header carries `token`, else why not: "missing" or "wrong"."""
    scheme, _, presented = (authorization or "").strip().partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        return "missing"
    # Constant time: how long a wrong guess takes must not tell how much of it was right.
    same = hmac.compare_digest(presented.encode("latin-1", "replace"), token.encode("ascii"))
    return None if same else "wrong"


class RefusalLog:
    """When to log a refused post: the first of each reason, then at most one line a minute with the count.

    Anyone who can reach the port can post, and one warning per post would let
    them flood the log; the counter on /metrics still counts every one.
    """

    def __init__(self, every_s: float = 60.0) -> None:
        self.every_s = every_s
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._since: dict[str, int] = {}

    def note(self, reason: str, now: float) -> int | None:
        """The refusals of `reason` this line reports (this one included), or None: not now."""
        with self._lock:
            self._since[reason] = self._since.get(reason, 0) + 1
            last = self._last.get(reason)
            if last is not None and now - last < self.every_s:
                return None
            self._last[reason] = now
            return self._since.pop(reason)


class NotifyServer(ThreadingHTTPServer):
    """The webhook server, with the token it checks and the count of what it refused."""

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], token: str | None) -> None:
        super().__init__(address, handler)
        self.token = token
        self.refusals = RefusalLog()
        self.registry = CollectorRegistry()
        self.rejected = Counter(
            "finsent_notify_rejected",
            "Webhook posts refused for a missing or wrong bearer token",
            ["reason"],
            registry=self.registry,
        )
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)  # both series exist from the start, at 0

    def rejected_total(self, reason: str) -> float:
        return self.registry.get_sample_value("finsent_notify_rejected_total", {"reason": reason}) or 0.0


def make_server(
    host: str, port: int, cache: AlertCache, forward: str | None, wait_s: float = 5.0, token: str | None = None
) -> NotifyServer:
    class Handler(BaseHTTPRequestHandler):
        server: NotifyServer

        def do_POST(self) -> None:
            if self.server.token is not None:
                reason = check_bearer(self.headers.get("Authorization"), self.server.token)
                if reason is not None:
                    self.refuse(reason)
                    return
            try:
                payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            except ValueError:
                self.send_response(400)
                self.end_headers()
                return
            self.send_response(200)
            self.end_headers()
            for a in payload.get("alerts", []):
                lab = a.get("labels", {})
                found = cache.get(lab.get("dimension", ""), lab.get("key", ""))
                deadline = time.monotonic() + wait_s
                # Prometheus can be faster than our consumer of the alerts topic: wait briefly for the evidence.
                while found is None and lab.get("key") and time.monotonic() < deadline:
                    time.sleep(0.2)
                    found = cache.get(lab.get("dimension", ""), lab.get("key", ""))
                deliver(format_notification(a, found), forward)

        def refuse(self, reason: str) -> None:
            """401, counted, and logged by reason and client address (rate-limited); never with what was sent."""
            self.server.rejected.labels(reason).inc()
            n = self.server.refusals.note(reason, time.monotonic())
            if n is not None:
                total = self.server.rejected_total(reason)
                log.warning(
                    "refused a webhook from %s: %s bearer token (%d since this line last appeared, %d in all; "
                    "logged at most once a minute)",
                    self.client_address[0], reason, n, total,
                )  # fmt: skip
            try:
                length = min(max(int(self.headers.get("Content-Length", 0)), 0), REFUSED_BODY_LIMIT)
            except ValueError:
                length = 0
            self.rfile.read(length)
            challenge = 'Bearer realm="finsent notify"'
            if reason == "wrong":
                challenge += ', error="invalid_token"'
            self.send_response(401)
            self.send_header("WWW-Authenticate", challenge)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = generate_latest(self.server.registry)
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    return NotifyServer((host, port), Handler, token)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "notify",
        help="Alertmanager webhook receiver that adds evidence headlines and forwards notifications",
        description="Receive Alertmanager webhooks, add the evidence headlines from the alerts topic, and forward "
        "one readable message per alert to a Slack-compatible webhook (and print it as a JSON line).",
    )
    p.add_argument("--listen", default="127.0.0.1:9095", help="HOST:PORT to receive webhooks on (default loopback)")
    p.add_argument(
        "--forward",
        metavar="URL",
        default=os.environ.get("FINSENT_NOTIFY_FORWARD"),
        help="POST each notification as JSON here (Slack-compatible 'text'; env FINSENT_NOTIFY_FORWARD)",
    )
    p.add_argument(
        "--token-file",
        metavar="FILE",
        default=os.environ.get(TOKEN_FILE_ENV) or None,
        help=f"accept only webhooks carrying 'Authorization: Bearer TOKEN', TOKEN being this file's content (env "
        f"{TOKEN_FILE_ENV}; or the token itself in env {TOKEN_ENV}). Without either, anyone who can reach "
        "--listen can post; refused posts get 401 and are counted in finsent_notify_rejected_total on GET /metrics",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace, settings: Settings) -> int:
    host, _, port = args.listen.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise CliError(f"--listen {args.listen!r} is not HOST:PORT (e.g. 127.0.0.1:9095)")
    token = load_token(args.token_file)
    try:
        server = make_server(host or "127.0.0.1", int(port), cache := AlertCache(), args.forward, token=token)
    except OSError as exc:
        raise CliError(f"cannot listen on {args.listen}: {exc.strerror or exc}") from None
    try:
        consumer = alerts_consumer(settings)
    except BaseException:
        server.server_close()
        raise
    stop = threading.Event()
    threading.Thread(target=follow_alerts, args=(settings, cache, stop, consumer), daemon=True).start()
    log.info("notifier listening on %s, forwarding to %s", args.listen, args.forward or "stdout only")
    if token is None:
        # Logged once the notifier is up (not before a start-up error): the one line an operator should not miss.
        log.warning(
            "no webhook token (--token-file, %s or %s): accepting webhooks from anyone who can reach %s",
            TOKEN_FILE_ENV, TOKEN_ENV, args.listen,
        )  # fmt: skip
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("notifier stopped")
    finally:
        stop.set()
        server.server_close()
    return 0
