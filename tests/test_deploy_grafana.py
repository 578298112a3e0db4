"""Grafana dashboards: generated from code without drift, well-formed, and every query returns data.

No Grafana server can run here, so the check is the next best: every panel's
PromQL (variables substituted as Grafana would) goes to a real Prometheus's
/api/v1/query, which scrapes the worker's real metric set (sample values) and
evaluates the real recording and alert rules. A query must parse AND return
data: a misspelt metric or label is an empty panel, and fails here.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.grafana import queries
from deploy.prometheus.fast_rules import fast_rules
from tests.test_deploy_support import (
    ALERT_RULES,
    DEPLOY,
    IN_CI,
    RECORDING_RULES,
    SURGE_ENTITY,
    SURGE_TOPIC,
    http_json,
    prom_query,
    prometheus,
    sample_worker_metrics,
    wait_for,
)

GRAFANA = DEPLOY / "grafana"
COMMITTED = {p.name: p for p in sorted((GRAFANA / "dashboards").glob("*.json"))}
UIDS = {"finsent-overview", "finsent-topics", "finsent-company"}
# What a user picks: the company in a surge, and two topics (multi-select).
VALUES = {"entity": SURGE_ENTITY, "topic": f"({SURGE_TOPIC}|Markets)"}


def generator() -> Any:
    """deploy/grafana/dashboards.py, which needs grafana-foundation-sdk (a dev dependency)."""
    try:
        import grafana_foundation_sdk  # noqa: F401
    except ImportError:
        if IN_CI:
            pytest.fail("CI needs grafana-foundation-sdk==1769699379!11.6.0 (the dev extra)")
        pytest.skip("grafana-foundation-sdk not installed")
    from deploy.grafana import dashboards

    return dashboards


def committed() -> dict[str, dict[str, Any]]:
    return {name: json.loads(p.read_text()) for name, p in COMMITTED.items()}


def test_regenerating_gives_the_committed_json() -> None:
    gen = generator()
    rendered = gen.render()
    assert set(rendered) == set(COMMITTED), "generated and committed dashboard files differ"
    for name, text in rendered.items():
        assert COMMITTED[name].read_text() == text, (
            f"{name} is stale: run .venv/bin/python deploy/grafana/dashboards.py"
        )
    assert gen.main(["--check"]) == 0


def test_dashboards_are_well_formed() -> None:
    dashes = committed()
    assert {d["uid"] for d in dashes.values()} == UIDS
    for name, d in dashes.items():
        assert d["schemaVersion"] >= 39, f"{name}: not a Grafana 11 model"
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        names = [v["name"] for v in d["templating"]["list"]]
        assert names[0] == "datasource", name
        for p in d["panels"]:
            # Every panel follows the datasource variable, so any provisioned Prometheus works.
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, (name, p["title"])
            assert p["targets"] and all(t.get("expr") for t in p["targets"]), (name, p["title"])
            assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, (name, p["title"])
        assert d["annotations"]["list"], f"{name}: no alert annotations"
    company = dashes["finsent-company.json"]
    entity = next(v for v in company["templating"]["list"] if v["name"] == "entity")
    assert not entity.get("multi"), "drill-down takes one company (alerts link ?var-entity=KEY)"
    overview = dashes["finsent-overview.json"]
    exprs = " ".join(t["expr"] for p in overview["panels"] for t in p["targets"])
    for metric in ("finsent_messages_total", "finsent_consumer_lag", "finsent_deadletter_total", "finsent_model_info"):
        assert metric in exprs, f"overview lacks {metric}"
    assert "ALERTS{" in overview["annotations"]["list"][0]["expr"]


def test_alert_dashboard_links_point_at_real_dashboards_and_variables() -> None:
    """The `dashboard` annotations in the alert rules open these dashboards with their variables."""
    dashes = {d["uid"]: d for d in committed().values()}
    text = ALERT_RULES.read_text()
    for uid, var in (("finsent-company", "entity"), ("finsent-topics", "topic")):
        assert f"/d/{uid}/{uid}?var-{var}=" in text
        assert var in [v["name"] for v in dashes[uid]["templating"]["list"]]
    for uid in ("finsent-overview", "finsent-topics"):
        assert f"/d/{uid}/{uid}" in text


def test_provisioning_matches_the_dashboards() -> None:
    """Grafana refuses to start with two default datasources: check every provisioning file together."""
    files = sorted((GRAFANA / "provisioning" / "datasources").glob("*.y*ml"))
    datasources = [d for f in files for d in yaml.safe_load(f.read_text())["datasources"]]
    assert [d["name"] for d in datasources if d.get("isDefault")] == ["Prometheus"]
    prom = [d for d in datasources if d["type"] == "prometheus"]
    assert len(prom) == 1 and prom[0]["url"] == "http://prometheus:9090"
    assert len({d["uid"] for d in datasources}) == len(datasources)
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "finsent.yml").read_text())["providers"]
    assert [p["options"]["path"] for p in providers] == ["/var/lib/grafana/dashboards/finsent"]


@pytest.fixture(scope="module")
def live_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """Prometheus (1 s scrape and evaluation) over the sample worker, with the recording rules
    and the alert rules at `for: 0s`, so ALERTS (annotation queries) exist too."""
    tmp: Path = tmp_path_factory.mktemp("grafana-prom")
    fast = fast_rules(tmp / "fast.yml", "0s")
    with sample_worker_metrics() as target, prometheus(tmp, [target], [RECORDING_RULES, fast]) as port:
        yield port


@pytest.mark.slow
def test_every_panel_query_parses_and_returns_data(live_prometheus: int) -> None:
    checks = [
        (name, title, expr)
        for name, d in committed().items()
        for title, expr in queries.panel_queries(d, VALUES) + queries.annotation_queries(d, VALUES)
    ]
    assert len(checks) > 40

    def empty() -> list[str]:
        return [f"{n}: {t}: {e}" for n, t, e in checks if not prom_query(live_prometheus, e)]

    # Rates need two scrapes, ALERTS one rule evaluation after them: poll briefly, then name the empty panels.
    missing = empty()
    deadline = time.monotonic() + 20
    while missing and time.monotonic() < deadline:
        time.sleep(0.5)
        missing = empty()
    assert not missing, "panels without data:\n" + "\n".join(missing)


@pytest.mark.slow
def test_template_variables_list_the_keys(live_prometheus: int) -> None:
    """label_values(selector, label) as Grafana runs it: the series API, then the label's values."""
    found: dict[str, set[str]] = {}
    for d in committed().values():
        for name, selector, label in queries.variable_queries(d):
            url = f"http://127.0.0.1:{live_prometheus}/api/v1/series?" + urllib.parse.urlencode({"match[]": selector})
            series = wait_for(lambda url=url: http_json(url)["data"], 10, f"series for {selector}")
            found[name] = {s[label] for s in series}
    assert SURGE_ENTITY in found["entity"] and SURGE_TOPIC in found["topic"], found
    assert "all" not in found["entity"]
