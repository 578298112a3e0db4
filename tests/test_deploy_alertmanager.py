"""Alertmanager config: amtool checks, routing, templates, and grouping/inhibition in a real Alertmanager.

amtool check-config proves the file loads; `amtool config routes test` proves
which receiver each kind of alert reaches; `amtool template render` proves the
email/Slack texts render. A real Alertmanager, fed alerts over its API, proves
the two behaviours that matter to a risk desk: a surge across ten companies is
ONE notification, and a stalled pipeline silences sentiment alerts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_deploy_support import AM_DIR, Webhook, alertmanager, http_json, need, run, wait_for

TEMPLATES = AM_DIR / "templates"
COMPANIES = ["AAPL", "MSFT", "TSLA", "NVDA", "AMZN", "META", "GOOGL", "JPM", "BAC", "XOM"]


NOTIFY_TOKEN_FILE = "/run/secrets/notify/token"  # where compose mounts the notifier's token


def local_config(
    tmp_path: Path, webhook_url: str | None = None, fast: bool = False, token_file: Path | None = None
) -> Path:
    """The deployed config with the template and token paths made local; optionally every webhook
    sent to `webhook_url` and the group timers shortened (the routing tree itself is unchanged).
    The token file (default: a made-up token in tmp_path) is what each webhook presents as its bearer."""
    cfg = yaml.safe_load((AM_DIR / "alertmanager.yml").read_text())
    assert cfg["templates"] == ["/etc/alertmanager/templates/*.tmpl"], "compose mounts templates there"
    cfg["templates"] = [str(TEMPLATES / "*.tmpl")]
    if token_file is None:
        token_file = tmp_path / "notify-token"
        token_file.write_text("test-token\n")
    for receiver in cfg["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            auth = hook["http_config"]["authorization"]
            assert auth == {"type": "Bearer", "credentials_file": NOTIFY_TOKEN_FILE}, receiver["name"]
            auth["credentials_file"] = str(token_file)
            if webhook_url:
                hook["url"] = webhook_url
    if fast:
        for route in [cfg["route"], *cfg["route"].get("routes", [])]:
            route.update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_amtool_check_config(tmp_path: Path) -> None:
    out = run([need("amtool"), "check-config", str(local_config(tmp_path))])
    assert "SUCCESS" in out and "1 templates" in out and "3 inhibit rules" in out, out


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        ({"alertname": "NegativeSentimentSurge", "dimension": "entity", "key": "AAPL", "severity": "critical"}, "risk-desk"),
        ({"alertname": "NegativeSentimentSurge", "dimension": "entity", "key": "AAPL", "severity": "warning"}, "risk-desk"),
        ({"alertname": "NegativeShareHigh", "dimension": "entity", "key": "JPM", "severity": "warning"}, "risk-desk"),
        ({"alertname": "NegativeSentimentSurge", "dimension": "topic", "key": "Earnings", "severity": "critical"},
         "finsent-webhook"),
        ({"alertname": "NegativeSentimentSurge", "dimension": "all", "key": "all", "severity": "warning"},
         "finsent-webhook"),
        ({"alertname": "ScoringStalled", "instance": "w1:9464", "severity": "critical"}, "platform-oncall"),
        ({"alertname": "ModelMissing", "instance": "w1:9464", "severity": "critical"}, "platform-oncall"),
        ({"alertname": "ConsumerLagHigh", "topic": "finsent.news", "severity": "warning"}, "platform-oncall"),
        ({"alertname": "DeadLetterRateHigh", "severity": "warning"}, "platform-oncall"),
        ({"alertname": "SomethingElse"}, "finsent-webhook"),
    ],
)  # fmt: skip
def test_routing(tmp_path: Path, labels: dict[str, str], receiver: str) -> None:
    """Companies to the risk desk, topics to the default, pipeline health to on-call by severity."""
    cfg = local_config(tmp_path)
    args = [f"{k}={v}" for k, v in labels.items()]
    out = run(
        [need("amtool"), "config", "routes", "test", f"--config.file={cfg}", f"--verify.receivers={receiver}", *args]
    )
    assert out.splitlines()[0].strip() == receiver, out


def render(tmpl: str, data: dict[str, Any], tmp_path: Path) -> str:
    path = tmp_path / "data.json"
    path.write_text(json.dumps(data))
    return run(
        [need("amtool"), "template", "render", f"--template.glob={TEMPLATES}/*.tmpl",
         f'--template.text={{{{ template "{tmpl}" . }}}}', f"--template.data={path}"]
    )  # fmt: skip


def surge_alert(key: str, status: str = "firing") -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "NegativeSentimentSurge", "dimension": "entity", "key": key, "severity": "critical"},
        "annotations": {
            "summary": f"Negative sentiment surge: company {key} (critical)",
            "description": f"Negative share 80% vs baseline 10% (z-score 9.0) over 50 items in the last window. "
            f"The most negative headlines are in the surge record on Kafka topic finsent.alerts, key entity:{key}.",
            "dashboard": f"/d/finsent-company/finsent-company?var-entity={key}",
        },
        "startsAt": "2026-11-22T13:00:00Z",
        "endsAt": "2026-11-22T13:20:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
    }


def test_templates_render_a_grouped_surge(tmp_path: Path) -> None:
    """Subject names every company; the body has share vs baseline, z-score, volume and a full dashboard URL."""
    alerts = [surge_alert(k) for k in COMPANIES[:3]] + [surge_alert("XOM", "resolved")]
    data = {
        "receiver": "risk-desk", "status": "firing", "externalURL": "http://localhost:9093", "alerts": alerts,
        "groupLabels": {"alertname": "NegativeSentimentSurge", "dimension": "entity"},
        "commonLabels": {"alertname": "NegativeSentimentSurge", "dimension": "entity", "severity": "critical"},
        "commonAnnotations": {},
    }  # fmt: skip
    subject = render("finsent.subject", data, tmp_path)
    assert subject.strip() == "[FIRING:3] NegativeSentimentSurge (entity): AAPL, MSFT, TSLA", subject
    text = render("finsent.text", data, tmp_path)
    assert "3 firing:" in text and "1 resolved:" in text
    assert "company AAPL [critical]" in text and "z-score 9.0" in text and "vs baseline 10%" in text
    assert "http://localhost:3000/d/finsent-company/finsent-company?var-entity=MSFT" in text
    html = render("finsent.html", data, tmp_path)
    assert '<a href="http://localhost:3000/d/finsent-company/finsent-company?var-entity=TSLA">' in html
    pipeline = {
        **data,
        "alerts": [{"status": "firing", "labels": {"alertname": "ScoringStalled", "instance": "w1:9464",
                    "severity": "critical"}, "annotations": {"summary": "s", "description": "d",
                    "dashboard": "/d/finsent-overview/finsent-overview"}, "startsAt": "2026-11-22T13:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z"}],
        "commonLabels": {"alertname": "ScoringStalled", "severity": "critical"},
    }  # fmt: skip
    assert render("finsent.subject", pipeline, tmp_path).strip() == "[FIRING:1] ScoringStalled: w1:9464"
    assert "worker w1:9464 [critical]" in render("finsent.text", pipeline, tmp_path)


def post(port: int, *alerts: dict[str, Any]) -> None:
    http_json(f"http://127.0.0.1:{port}/api/v2/alerts", list(alerts))


def api_alert(labels: dict[str, str]) -> dict[str, Any]:
    return {"labels": labels, "annotations": {"summary": "test"}}


@pytest.mark.slow
def test_ten_companies_one_notification_and_stall_inhibits_sentiment(tmp_path: Path) -> None:
    hook = Webhook()
    try:
        with alertmanager(tmp_path, local_config(tmp_path, hook.url, fast=True).read_text()) as port:
            # A wave of ten company surges (mixed severities) and one topic surge, in one post.
            surges = [
                api_alert({"alertname": "NegativeSentimentSurge", "dimension": "entity", "key": k,
                           "severity": "critical" if i % 2 else "warning"})
                for i, k in enumerate(COMPANIES)
            ]  # fmt: skip
            topic = api_alert(
                {"alertname": "NegativeSentimentSurge", "dimension": "topic", "key": "Earnings", "severity": "critical"}
            )
            post(port, *surges, topic)
            wait_for(lambda: len(hook.snapshot()) >= 2, 15, "two notifications")
            time.sleep(1.5)  # a third one would arrive within group_interval
            posts = hook.snapshot()
            assert len(posts) == 2, [(p["receiver"], len(p["alerts"])) for p in posts]
            by_receiver = {p["receiver"]: p for p in posts}
            companies = by_receiver["risk-desk"]
            assert companies["groupLabels"] == {"alertname": "NegativeSentimentSurge", "dimension": "entity"}
            assert sorted(a["labels"]["key"] for a in companies["alerts"]) == sorted(COMPANIES)
            assert [a["labels"]["key"] for a in by_receiver["finsent-webhook"]["alerts"]] == ["Earnings"]

            # NegativeShareHigh for a company in surge is inhibited by the surge; for another one it is not.
            share = {"alertname": "NegativeShareHigh", "dimension": "entity", "severity": "warning"}
            post(port, api_alert({**share, "key": "AAPL"}), api_alert({**share, "key": "NFLX"}))
            wait_for(lambda: state(port, "NegativeShareHigh", "AAPL") == "suppressed", 10, "AAPL share inhibited")
            assert state(port, "NegativeShareHigh", "NFLX") == "active"

            # A stalled worker silences every sentiment alert, and nothing else.
            stall = {"alertname": "ScoringStalled", "instance": "w1:9464", "severity": "critical"}
            lag = {"alertname": "ConsumerLagHigh", "topic": "finsent.news", "severity": "warning"}
            post(port, api_alert(stall), api_alert(lag))
            wait_for(lambda: state(port, "NegativeShareHigh", "NFLX") == "suppressed", 10, "sentiment inhibited")
            for key in [*COMPANIES, "Earnings"]:
                assert state(port, "NegativeSentimentSurge", key) == "suppressed", key
            assert state(port, "ScoringStalled", None) == "active"
            assert state(port, "ConsumerLagHigh", None) == "active"
    finally:
        hook.close()


@pytest.mark.slow
def test_a_company_surge_inhibits_the_topic_and_all_pages_it_drives(tmp_path: Path) -> None:
    """Propagation: TSLA's surge also lifts its topic and all:all. Those carry incident=TSLA and are
    held back while TSLA's own page fires; a topic surge of another incident still pages."""
    hook = Webhook()
    surge = {"alertname": "NegativeSentimentSurge", "severity": "warning"}
    try:
        with alertmanager(tmp_path, local_config(tmp_path, hook.url, fast=True).read_text()) as port:
            post(
                port,
                api_alert({**surge, "dimension": "entity", "key": "TSLA", "incident": "TSLA"}),
                api_alert({**surge, "dimension": "topic", "key": "Stock Movement", "incident": "TSLA"}),
                api_alert({**surge, "dimension": "all", "key": "all", "incident": "TSLA"}),
                # Derived from a company whose own surge is not firing (still in warm-up, say): pages.
                api_alert({**surge, "dimension": "topic", "key": "Earnings", "incident": "NFLX"}),
                # Of no one company's making: pages.
                api_alert({**surge, "dimension": "topic", "key": "Macro"}),
            )
            wait_for(lambda: state(port, "NegativeSentimentSurge", "all") == "suppressed", 10, "all:all inhibited")
            assert state(port, "NegativeSentimentSurge", "Stock Movement") == "suppressed"
            for key in ("TSLA", "Earnings", "Macro"):
                assert state(port, "NegativeSentimentSurge", key) == "active", key
            wait_for(lambda: len(hook.snapshot()) >= 2, 15, "two notifications")
            time.sleep(1.5)
            paged = sorted(a["labels"]["key"] for p in hook.snapshot() for a in p["alerts"])
            assert paged == ["Earnings", "Macro", "TSLA"], paged

            # TSLA resolves while its topic is still up: the topic is no longer held back.
            post(port, {**api_alert({**surge, "dimension": "entity", "key": "TSLA", "incident": "TSLA"}),
                        "endsAt": "2000-01-01T00:00:00Z"})  # fmt: skip
            wait_for(lambda: state(port, "NegativeSentimentSurge", "Stock Movement") == "active", 10, "released")
    finally:
        hook.close()


def state(port: int, alertname: str, key: str | None) -> str:
    """Alertmanager's view of one alert: active, suppressed (inhibited/silenced) or unprocessed."""
    for a in http_json(f"http://127.0.0.1:{port}/api/v2/alerts"):
        if a["labels"]["alertname"] == alertname and a["labels"].get("key") == key:
            return str(a["status"]["state"])
    return "absent"
