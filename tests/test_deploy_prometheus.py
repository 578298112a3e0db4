"""Prometheus config and rules: promtool checks, rule unit tests, and the rules' contract.

promtool is the authority on syntax and on what the rules do (deploy/prometheus/tests/*.yml
drive every alert through firing, not firing and resolution); the Python tests
here pin what promtool cannot see: that every alert HAS those three cases, the
alert names and labels other systems rely on, that the volume guard equals the
worker's min_volume, and that the generated fast variant differs only in `for:`.
One real Prometheus run proves the annotation templates render against live data.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.prometheus.fast_rules import fast_rules
from tests.test_deploy_support import (
    ALERT_RULES,
    DEPLOY,
    PROM_DIR,
    RECORDING_RULES,
    SURGE_ENTITY,
    http_json,
    need,
    prometheus,
    run,
    sample_worker_metrics,
    wait_for,
)

CONTRACT = {
    "NegativeSentimentSurge",
    "NegativeShareHigh",
    "ScoringStalled",
    "DeadLetterRateHigh",
    "ConsumerLagHigh",
    "ModelMissing",
}
SENTIMENT = {"NegativeSentimentSurge", "NegativeShareHigh"}
UNIT_TESTS = sorted((PROM_DIR / "tests").glob("*.yml"))


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERT_RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_prometheus_config_is_valid() -> None:
    """Full check (not --syntax-only): also loads the rule files the config names, relative to it."""
    out = run([need("promtool"), "check", "config", str(PROM_DIR / "prometheus.yml")])
    assert "SUCCESS: 2 rule files found" in out, out


def test_rule_files_are_valid() -> None:
    out = run([need("promtool"), "check", "rules", str(RECORDING_RULES), str(ALERT_RULES)])
    assert out.count("SUCCESS") == 2, out


def test_rule_unit_tests_pass() -> None:
    assert UNIT_TESTS, "no promtool unit tests"
    out = run([need("promtool"), "test", "rules", *[p.name for p in UNIT_TESTS]], cwd=PROM_DIR / "tests")
    assert out.count("SUCCESS") == len(UNIT_TESTS), out


def test_every_alert_is_unit_tested_firing_quiet_and_resolving() -> None:
    """Each alert needs: a case where it fires; a later eval in that case where it is gone
    (resolution); and a case where its input is present but it never fires (low volume,
    below threshold, idle...)."""
    fires: set[str] = set()
    resolves: set[str] = set()
    quiet: set[str] = set()
    for path in UNIT_TESTS:
        for case in yaml.safe_load(path.read_text()).get("tests", []):
            by_alert: dict[str, list[tuple[float, bool]]] = {}
            for ev in case.get("alert_rule_test", []):
                by_alert.setdefault(ev["alertname"], []).append((seconds(ev["eval_time"]), bool(ev.get("exp_alerts"))))
            for name, evals in by_alert.items():
                evals.sort()
                if any(f for _, f in evals):
                    fires.add(name)
                    first = min(t for t, f in evals if f)
                    if any(t > first and not f for t, f in evals):
                        resolves.add(name)
                else:
                    quiet.add(name)
    names = {r["alert"] for r in alert_rules()}
    assert names - fires == set(), f"never tested firing: {names - fires}"
    assert names - resolves == set(), f"never tested resolving: {names - resolves}"
    assert names - quiet == set(), f"never tested staying quiet: {names - quiet}"


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", str(duration)))


def test_alert_contract() -> None:
    """Names are the contract (DESIGN.md); every alert is routable and explains itself."""
    rules = alert_rules()
    assert {r["alert"] for r in rules} == CONTRACT
    for r in rules:
        name, ann = r["alert"], r.get("annotations", {})
        assert {"summary", "description", "dashboard"} <= set(ann), name
        assert ann["dashboard"].lstrip().startswith(("/d/", "{{")), name
        assert seconds(r.get("for", "0s")) >= 60, f"{name}: production `for` shorter than a minute"
        if name in SENTIMENT:
            # dimension and key come through the aggregation; the summary names the topic or company.
            assert "by (dimension, key" in r["expr"], name
            assert "$labels.key" in ann["summary"] and "var-entity={{ $labels.key" in ann["dashboard"], name
            assert "baseline" in ann["description"] and "z-score" in ann["description"], name
        if name == "NegativeSentimentSurge":
            assert "severity" in r["expr"] and "severity" not in r.get("labels", {}), "severity comes from the worker"
        else:
            assert r["labels"]["severity"] in ("warning", "critical"), name


def test_volume_guard_matches_worker_min_volume() -> None:
    """The Prometheus guard mirrors the in-stream rule: same minimum items per window."""
    from monitor.settings import SurgeSettings

    guards = {int(g) for r in alert_rules() for g in re.findall(r"finsent_window_count\[\w+\]\)\) >= (\d+)", r["expr"])}
    toml_min = tomllib.loads((DEPLOY / "finsent.toml").read_text())["surge"]["min_volume"]
    assert guards == {toml_min} == {SurgeSettings().min_volume}


def test_fast_variant_differs_only_in_for(tmp_path: Path) -> None:
    out = fast_rules(tmp_path / "fast.yml", "2s", {"ModelMissing": "5s"})
    run([need("promtool"), "check", "rules", str(out)])
    prod, fast = yaml.safe_load(ALERT_RULES.read_text()), yaml.safe_load(out.read_text())
    fors = [r.pop("for") for g in fast["groups"] for r in g["rules"] if "alert" in r]
    for g in prod["groups"]:
        for r in g["rules"]:
            r.pop("for", None)
    assert fast == prod
    assert sorted(fors) == ["2s"] * (len(fors) - 1) + ["5s"]
    with pytest.raises(ValueError):
        fast_rules(tmp_path / "bad.yml", "soon")


@pytest.mark.slow
def test_alerts_fire_with_rendered_annotations_in_a_real_prometheus(tmp_path: Path) -> None:
    """Annotation templates run PromQL (`query`) at alert time: check them against live worker series.

    Sample worker metrics (AAPL and topic Earnings in a surge) scraped every second, rules
    evaluated every second with `for: 0s` (generated fast variant).
    """
    rules = [RECORDING_RULES, fast_rules(tmp_path / "fast.yml", "0s")]
    with sample_worker_metrics() as target, prometheus(tmp_path, [target], rules) as port:

        def surge_alerts() -> list[dict[str, Any]]:
            alerts = http_json(f"http://127.0.0.1:{port}/api/v1/alerts")["data"]["alerts"]
            return [
                a for a in alerts if a["labels"]["alertname"] == "NegativeSentimentSurge" and a["state"] == "firing"
            ]

        firing = wait_for(lambda: len(surge_alerts()) == 2 and surge_alerts(), 15, "two surge alerts firing")
        by_key = {a["labels"]["key"]: a for a in firing}
        aapl = by_key[SURGE_ENTITY]
        assert aapl["labels"] == {
            "alertname": "NegativeSentimentSurge", "dimension": "entity", "key": "AAPL", "severity": "critical",
        }  # fmt: skip
        assert aapl["annotations"]["summary"] == "Negative sentiment surge: company AAPL (critical)"
        desc = aapl["annotations"]["description"]
        assert desc.startswith("Negative share 80% vs baseline 12% (z-score 13.6) over 40 items in the last window"), (
            desc
        )
        assert "key entity:AAPL" in desc
        assert aapl["annotations"]["dashboard"] == "/d/finsent-company/finsent-company?var-entity=AAPL"
        assert by_key["Earnings"]["annotations"]["dashboard"] == "/d/finsent-topics/finsent-topics?var-topic=Earnings"
        # The healthy sample worker trips none of the pipeline alerts. (ScoringStalled's "no worker
        # up" branch does fire, at `for: 0s`, until the first scrape: wait for its next evaluation.)

        def pipeline_alerts() -> set[str]:
            alerts = http_json(f"http://127.0.0.1:{port}/api/v1/alerts")["data"]["alerts"]
            return {a["labels"]["alertname"] for a in alerts} - SENTIMENT

        wait_for(lambda: not pipeline_alerts(), 5, "pipeline alerts to clear")
