"""Access control against the real counterparts: Alertmanager presenting the notifier's bearer token,
Prometheus scraping /metrics over mutual TLS, and `finsent notify` run as a process.

The certificates are made here, per test session, by the openssl CLI (a throwaway CA, a server
certificate for localhost and 127.0.0.1, a client certificate, and a second CA's client certificate
that must be refused); no key leaves pytest's temporary directory. The receiver tests that need no
other process are in tests/test_notify.py.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from monitor import cli
from monitor.cli.main import build_parser, settings_from_args
from monitor.cli.notify import TOKEN_ENV, TOKEN_FILE_ENV
from monitor.settings import MetricsSettings
from monitor.stream.exposition import HANDSHAKE_TIMEOUT_S, metrics_url, serve_metrics
from monitor.stream.metrics import Metrics
from tests.test_deploy_alertmanager import api_alert, local_config
from tests.test_deploy_alertmanager import post as am_post
from tests.test_deploy_support import (
    Webhook,
    alertmanager,
    free_port,
    http_json,
    need,
    prom_query,
    prometheus,
    run,
    wait_for,
)
from tests.test_notify import AM, TOKEN, receiver
from tests.tiny_bundle import make_bundle

# --- /metrics over TLS ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca.pem, server.{pem,key} (localhost, 127.0.0.1), client.{pem,key}; rogue-client.{pem,key} from another CA."""
    openssl = need("openssl")
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    for ca in ("ca", "rogue-ca"):
        run([openssl, "req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2",
             "-subj", f"/CN=finsent test {ca}"], cwd=d)  # fmt: skip
    leaves = {
        "server": ("ca", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        "client": ("ca", "extendedKeyUsage=clientAuth\n"),
        "rogue-client": ("rogue-ca", "extendedKeyUsage=clientAuth\n"),
    }
    for name, (ca, ext) in leaves.items():
        (d / f"{name}.ext").write_text(ext)
        run([openssl, "req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=finsent {name}"],
            cwd=d)  # fmt: skip
        run([openssl, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext"], cwd=d)  # fmt: skip
    return d


def mtls_settings(pki: Path) -> MetricsSettings:
    return MetricsSettings(
        host="127.0.0.1",
        port=0,
        tls_certfile=pki / "server.pem",
        tls_keyfile=pki / "server.key",
        tls_client_cafile=pki / "ca.pem",
        tls_client_auth_required=True,
    )


@contextmanager
def served(settings: MetricsSettings, handshake_timeout_s: float | None = None) -> Iterator[str]:
    """The worker's metric set, one known value in it, served as the worker serves it; yields the URL."""
    m = Metrics()
    m.negative_share.labels("entity", "TSLA").set(0.42)
    server, _ = serve_metrics(settings, m.registry)
    if handshake_timeout_s is not None:
        server.handshake_timeout_s = handshake_timeout_s
    try:
        yield metrics_url(settings, server.server_port)
    finally:
        server.shutdown()
        server.server_close()


def client(pki: Path, cert: str | None) -> ssl.SSLContext:
    """A client trusting the test CA, presenting `cert` (None: no certificate)."""
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if cert:
        ctx.load_cert_chain(str(pki / f"{cert}.pem"), str(pki / f"{cert}.key"))
    return ctx


def fetch(url: str, ctx: ssl.SSLContext | None = None, timeout: float = 5) -> str:
    with urllib.request.urlopen(url, context=ctx, timeout=timeout) as resp:
        return str(resp.read().decode())


SAMPLE = 'finsent_negative_share{dimension="entity",key="TSLA"} 0.42'


def test_mutual_tls_serves_only_clients_with_a_certificate_from_the_ca(pki: Path) -> None:
    with served(mtls_settings(pki)) as url:
        assert url.startswith("https://127.0.0.1:")
        assert SAMPLE in fetch(url, client(pki, "client"))
        for refused in (None, "rogue-client"):  # no certificate; one signed by another CA
            with pytest.raises(OSError):
                fetch(url, client(pki, refused))
        with pytest.raises((OSError, http.client.HTTPException)):  # plain HTTP on the TLS port
            fetch(url.replace("https://", "http://"))
        assert SAMPLE in fetch(url, client(pki, "client")), "refused clients must not take the server down"


def test_server_only_tls_needs_no_client_certificate(pki: Path) -> None:
    settings = MetricsSettings(
        host="127.0.0.1", port=0, tls_certfile=pki / "server.pem", tls_keyfile=pki / "server.key"
    )
    with served(settings) as url:
        assert SAMPLE in fetch(url, client(pki, None))


def test_a_silent_client_does_not_stall_scraping(pki: Path) -> None:
    """A peer that connects and never starts its handshake (no certificate needed for that) must not
    block everyone else: prometheus_client's own TLS server would hang here until the peer left."""
    assert HANDSHAKE_TIMEOUT_S <= 30, "a scraper's own timeout is 10 s by default: longer would only hold threads"
    with served(mtls_settings(pki), handshake_timeout_s=2) as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        with socket.create_connection(("127.0.0.1", port)) as silent:
            silent.settimeout(10)
            time.sleep(0.3)
            t0 = time.monotonic()
            assert SAMPLE in fetch(url, client(pki, "client"), timeout=3)
            assert time.monotonic() - t0 < 3
            # And the silent peer is dropped once its handshake time is up.
            assert silent.recv(1) == b""


def test_unloadable_certificates_fail_at_start(pki: Path, tmp_path: Path) -> None:
    """ssl.SSLError is an OSError: the worker turns it into its one-line 'cannot serve metrics' error."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    for cert, key in ((garbage, pki / "server.key"), (pki / "server.pem", pki / "client.key")):
        settings = MetricsSettings(host="127.0.0.1", port=0, tls_certfile=cert, tls_keyfile=key)
        with pytest.raises(OSError):
            serve_metrics(settings, Metrics().registry)


def test_worker_flags_configure_metrics_tls(pki: Path, capsys: pytest.CaptureFixture) -> None:
    """--metrics-client-ca turns client verification on: a CA that is loaded but not enforced checks nothing."""
    argv = ["worker", "--metrics-tls-cert", str(pki / "server.pem"), "--metrics-tls-key", str(pki / "server.key")]
    m = settings_from_args(build_parser().parse_args([*argv, "--metrics-client-ca", str(pki / "ca.pem")])).metrics
    assert m == mtls_settings(pki).model_copy(update={"host": m.host, "port": m.port})
    assert m.tls_client_auth_required and m.scheme == "https"
    assert not settings_from_args(build_parser().parse_args(argv)).metrics.tls_client_auth_required
    # A half-configured TLS fails before the model is loaded or Kafka is asked: one line, exit 2.
    assert cli.main(["worker", "--metrics-tls-cert", str(pki / "server.pem"), "--bootstrap", "127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "finsent: error: invalid settings: metrics: tls_certfile and tls_keyfile go together: set both or neither"
    ]


@pytest.mark.slow
def test_prometheus_scrapes_over_mutual_tls_and_a_job_without_certificate_is_refused(pki: Path, tmp_path: Path) -> None:
    with served(mtls_settings(pki)) as url:
        target = url.split("/")[2]
        tls = {"ca_file": str(pki / "ca.pem"), "server_name": "localhost"}
        jobs: list[dict[str, Any]] = [
            {"job_name": "finsent", "scheme": "https", "static_configs": [{"targets": [target]}],
             "tls_config": {**tls, "cert_file": str(pki / "client.pem"), "key_file": str(pki / "client.key")}},
            {"job_name": "finsent-no-cert", "scheme": "https", "static_configs": [{"targets": [target]}],
             "tls_config": tls},
        ]  # fmt: skip
        with prometheus(tmp_path, [], [], jobs=jobs) as prom:
            wait_for(lambda: prom_query(prom, 'up{job="finsent"} == 1'), 30, "a scrape with the client certificate")
            got = wait_for(
                lambda: prom_query(prom, 'finsent_negative_share{job="finsent",dimension="entity",key="TSLA"}'),
                10,
                "the worker metric through Prometheus",
            )
            assert float(got[0]["value"][1]) == 0.42
            refused = wait_for(lambda: prom_query(prom, 'up{job="finsent-no-cert"}'), 30, "a scrape without one")
            assert refused[0]["value"][1] == "0"
            assert not prom_query(prom, '{job="finsent-no-cert", __name__=~"finsent_.*"}')
            targets = http_json(f"http://127.0.0.1:{prom}/api/v1/targets")["data"]["activeTargets"]
            errors = {t["labels"]["job"]: t["lastError"] for t in targets}
            assert errors["finsent"] == "" and "tls" in errors["finsent-no-cert"].lower(), errors


@pytest.mark.slow
def test_the_worker_serves_its_metrics_over_mutual_tls(
    pki: Path, tmp_path: Path, broker: Any, topics: dict[str, Any]
) -> None:
    """`finsent worker` itself, with the TLS flags: the served metrics are the real worker's (its model is
    loaded), a client without a certificate is refused, and the start-up log names the https URL."""
    port = free_port()
    env = {
        **os.environ,
        "FINSENT_KAFKA__BOOTSTRAP": broker.bootstrap,
        "FINSENT_KAFKA__PROFILE": "embedded",
        "FINSENT_TOPICS__INPUTS": json.dumps(topics["inputs"]),
        "FINSENT_TOPICS__PARTITIONS": str(topics["partitions"]),
    }
    env.update(
        {
            f"FINSENT_TOPICS__{k.upper()}": topics[k]
            for k in ("scored", "trends", "alerts", "deadletter", "trend_events")
        }
    )
    cmd = [sys.executable, "-m", "monitor.cli", "worker", "--model", str(make_bundle(tmp_path / "tiny")),
           "--metrics-port", str(port), "--web-port", str(free_port()), "--datadir", str(tmp_path / "state"),
           "--app-id", f"tls-{port}", "--no-create-topics", "--metrics-tls-cert", str(pki / "server.pem"),
           "--metrics-tls-key", str(pki / "server.key"), "--metrics-client-ca", str(pki / "ca.pem")]  # fmt: skip
    url = f"https://127.0.0.1:{port}/metrics"
    log = tmp_path / "worker.log"

    def ready() -> bool:
        try:
            return "finsent_model_loaded 1.0" in fetch(url, client(pki, "client"), timeout=2)
        except OSError:
            return False

    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            wait_for(lambda: proc.poll() is not None or ready(), 120, "the worker's metrics over mutual TLS")
            assert proc.poll() is None, log.read_text()[-3000:]
            with pytest.raises(OSError):
                fetch(url, client(pki, None))
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    assert f"metrics on {url} (client certificate required)" in log.read_text()


# --- the notifier's bearer token, presented by a real Alertmanager --------------------------------


def surge(key: str, dimension: str = "entity") -> dict[str, Any]:
    return api_alert({**AM["labels"], "dimension": dimension, "key": key})


@pytest.mark.slow
def test_alertmanager_presents_the_token_and_the_notification_arrives(tmp_path: Path) -> None:
    """The deployed alertmanager.yml (only its paths and timers made local) against the real receiver."""
    token = tmp_path / "notify-token"
    token.write_text(f"{TOKEN}\n")
    forwarded = Webhook()
    try:
        with receiver(TOKEN, forwarded.url) as server:
            url = f"http://127.0.0.1:{server.server_port}/alertmanager"
            with alertmanager(tmp_path, local_config(tmp_path, url, fast=True, token_file=token).read_text()) as am:
                am_post(am, surge("TSLA"))
                wait_for(forwarded.snapshot, 30, "the notification forwarded by the notifier")
            msg = forwarded.snapshot()[0]
            assert msg["key"] == "TSLA" and msg["status"] == "firing" and "Tesla recalls 2m cars" in msg["text"]
            assert server.rejected_total("missing") == server.rejected_total("wrong") == 0
    finally:
        forwarded.close()


@pytest.mark.slow
def test_alertmanager_with_a_wrong_token_is_refused_and_counted_until_the_file_is_fixed(tmp_path: Path) -> None:
    """Refused (401) and counted, nothing forwarded. Then the right token is written to the same file,
    with no reload: Alertmanager reads credentials_file at every send, so rotation needs no restart of it."""
    token = tmp_path / "notify-token"
    token.write_text("an-old-token\n")
    forwarded = Webhook()
    try:
        with receiver(TOKEN, forwarded.url) as server:
            url = f"http://127.0.0.1:{server.server_port}/alertmanager"
            with alertmanager(tmp_path, local_config(tmp_path, url, fast=True, token_file=token).read_text()) as am:
                am_post(am, surge("TSLA"))
                wait_for(lambda: server.rejected_total("wrong") >= 1, 30, "a refused webhook")
                time.sleep(1.5)  # Alertmanager's retries and next flushes: still nothing may get through
                assert forwarded.snapshot() == [] and server.rejected_total("missing") == 0

                token.write_text(f"{TOKEN}\n")
                am_post(am, surge("Earnings", "topic"))
                # The new alert, and the refused one: Alertmanager sends it again at its group's next flush.
                wait_for(
                    lambda: {m["key"] for m in forwarded.snapshot()} == {"TSLA", "Earnings"},
                    30,
                    "both notifications once the token file is right",
                )
    finally:
        forwarded.close()


# --- `finsent notify` as a process ------------------------------------------------------------------


def http_status(url: str, authorization: str | None = None, body: bytes | None = None) -> int:
    headers = {"Content-Type": "application/json", **({"Authorization": authorization} if authorization else {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def answers(port: int) -> bool:
    try:
        return http_status(f"http://127.0.0.1:{port}/metrics") == 200
    except OSError:
        return False


@contextmanager
def notify_process(tmp_path: Path, env: dict[str, str], name: str) -> Iterator[tuple[int, Path, Path]]:
    """`finsent notify --log-level DEBUG` on a free port, once it answers; yields (port, stdout, stderr) files."""
    port = free_port()
    out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    clean = {k: v for k, v in os.environ.items() if k not in (TOKEN_ENV, TOKEN_FILE_ENV)}
    cmd = [sys.executable, "-m", "monitor.cli", "notify", "--listen", f"127.0.0.1:{port}", "--log-level", "DEBUG"]
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(cmd, env={**clean, **env}, stdout=o, stderr=e)
        try:
            wait_for(lambda: proc.poll() is not None or answers(port), 30, "the notifier to listen")
            assert proc.poll() is None, err.read_text()[-2000:]
            yield port, out, err
        finally:
            proc.terminate()
            proc.wait(10)


@pytest.mark.slow
def test_notify_process_with_a_token_file_and_without_a_token(
    tmp_path: Path, broker: Any, topics: dict[str, Any]
) -> None:
    """The CLI end to end: FINSENT_NOTIFY_TOKEN_FILE gates posts, the 401 is logged by reason with neither
    the token nor the guess in the log (at DEBUG); without a token one warning says anyone is accepted."""
    kafka = {"FINSENT_KAFKA__BOOTSTRAP": broker.bootstrap, "FINSENT_KAFKA__PROFILE": "embedded",
             "FINSENT_TOPICS__ALERTS": topics["alerts"]}  # fmt: skip
    # An alert without a key: delivered at once (no wait for evidence from the alerts topic).
    body = json.dumps({"alerts": [{"status": "firing", "labels": {"alertname": "ScoringStalled"}}]}).encode()
    token = tmp_path / "token"
    token.write_text(f"{TOKEN}\n")
    guess = "guess-5d1e0a7f"
    with notify_process(tmp_path, {**kafka, TOKEN_FILE_ENV: str(token)}, "gated") as (port, out, err):
        url = f"http://127.0.0.1:{port}/alertmanager"
        assert http_status(url, None, body) == 401
        assert http_status(url, f"Bearer {guess}", body) == 401
        assert http_status(url, f"Bearer {TOKEN}", body) == 200
        wait_for(lambda: "ScoringStalled" in out.read_text(), 10, "the accepted notification on stdout")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert 'finsent_notify_rejected_total{reason="missing"} 1.0' in metrics
        assert 'finsent_notify_rejected_total{reason="wrong"} 1.0' in metrics
    log = err.read_text()
    assert "refused a webhook from 127.0.0.1: missing bearer token" in log
    assert "refused a webhook from 127.0.0.1: wrong bearer token" in log
    assert TOKEN not in log and guess not in log and TOKEN not in out.read_text()
    assert "accepting webhooks from anyone" not in log

    with notify_process(tmp_path, kafka, "open") as (port, out, err):
        url = f"http://127.0.0.1:{port}/alertmanager"
        assert http_status(url, None, body) == 200 and http_status(url, "Bearer whatever", body) == 200
        wait_for(lambda: len(out.read_text().splitlines()) == 2, 10, "both notifications on stdout")
    assert err.read_text().count("accepting webhooks from anyone who can reach") == 1
