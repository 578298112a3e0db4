"""Security properties that are cheap to prove: credentials pass through, nothing binds wide, no pickle."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import faust

from monitor.model.service import ModelService
from monitor.settings import load_settings
from monitor.stream.app import TABLE_NAME, Pipeline, create_app
from monitor.stream.clients import faust_broker_kwargs
from monitor.stream.metrics import Metrics
from tests.tiny_bundle import make_bundle

MONITOR = Path(__file__).resolve().parent.parent / "monitor"


def test_sasl_scram_reaches_faust_and_kafka_python(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("hunter2\n")
    s = load_settings(
        None,
        {"kafka": {"bootstrap": "k1:9093,k2:9093", "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256",
                   "sasl_username": "svc", "sasl_password_file": str(pw)}},
    )  # fmt: skip
    kw = faust_broker_kwargs(s)
    assert kw["broker"] == "kafka://k1:9093;kafka://k2:9093"
    creds = kw["broker_credentials"]
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password, str(creds.mechanism.value)) == ("svc", "hunter2", "SCRAM-SHA-256")
    assert isinstance(creds.ssl_context, ssl.SSLContext)
    kp = s.kafka.kafka_python_config()
    assert kp["security_protocol"] == "SASL_SSL" and kp["sasl_mechanism"] == "SCRAM-SHA-256"
    assert kp["sasl_plain_username"] == "svc" and kp["sasl_plain_password"] == "hunter2"


def test_tls_only_reaches_faust() -> None:
    s = load_settings(None, {"kafka": {"security_protocol": "SSL"}})
    creds = faust_broker_kwargs(s)["broker_credentials"]
    assert isinstance(creds, faust.SSLCredentials)
    assert creds.context.verify_mode == ssl.CERT_REQUIRED and creds.context.check_hostname


def test_http_endpoints_default_to_loopback(tmp_path: Path) -> None:
    s = load_settings()
    assert s.metrics.host == "127.0.0.1"
    app = create_app(s, Pipeline(s, ModelService([make_bundle(tmp_path / "m")], providers="cpu"), Metrics()))
    assert app.conf.web_bind == "127.0.0.1" and not app.conf.web_enabled
    assert load_settings(None, {"metrics": {"host": "0.0.0.0"}}).metrics.host == "0.0.0.0"  # explicit only


def test_no_pickle_in_the_serving_path(tmp_path: Path) -> None:
    banned = re.compile(r"^\s*(import|from)\s+(pickle|cPickle|dill|joblib|cloudpickle|torch)\b|pickle\.loads?\(", re.M)
    offenders = [p.name for p in MONITOR.rglob("*.py") if banned.search(p.read_text())]
    assert not offenders, offenders
    s = load_settings()
    app = create_app(s, Pipeline(s, ModelService([make_bundle(tmp_path / "m")], providers="cpu"), Metrics()))
    table = app.tables[TABLE_NAME]
    assert table.changelog_topic.value_serializer in (None, "json") and app.conf.value_serializer == "json"
    assert app.conf.key_serializer in ("raw", "json")
