"""Generate finsent's Grafana dashboards (Grafana 11 JSON model) from code.

Plain data, no SDK: every panel is (title, PromQL, unit, kind). Run
`python deploy/grafana/dashboards.py` to rewrite dashboards/*.json; a test
checks the committed JSON equals the generated one and runs every panel's
query against a real Prometheus scraping a real worker.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "dashboards"
DS = {"type": "prometheus", "uid": "prometheus"}


def panel(pid: int, title: str, exprs: list[tuple[str, str]], unit: str, x: int, y: int, w: int = 12, h: int = 8,
          kind: str = "timeseries") -> dict[str, Any]:  # fmt: skip
    return {
        "id": pid,
        "type": kind,
        "title": title,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom"}} if kind == "timeseries" else {},
        "targets": [
            {"refId": chr(65 + i), "expr": e, "legendFormat": leg, "datasource": DS} for i, (e, leg) in enumerate(exprs)
        ],  # fmt: skip
    }


def variable(name: str, query: str, label: str) -> dict[str, Any]:
    return {
        "name": name, "label": label, "type": "query", "datasource": DS, "refresh": 2,
        "query": {"query": query, "refId": "var"}, "definition": query, "includeAll": False, "multi": False,
        "current": {},
    }  # fmt: skip


def dashboard(uid: str, title: str, panels: list[dict[str, Any]], variables: list[dict[str, Any]] | None = None,
              ) -> dict[str, Any]:  # fmt: skip
    return {
        "uid": uid,
        "title": title,
        "tags": ["finsent"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": variables or []},
        "annotations": {
            "list": [
                {
                    "name": "surge alerts",
                    "datasource": DS,
                    "enable": True,
                    "iconColor": "red",
                    "expr": "changes(finsent_alerts_total[1m]) > 0",
                    "titleFormat": "surge alert",
                    "step": "60s",
                }
            ]
        },  # fmt: skip
        "panels": panels,
    }


def overview() -> dict[str, Any]:
    return dashboard("finsent-overview", "finsent overview", [
        panel(1, "Items scored per second by stream", [("sum by (stream) (rate(finsent_messages_total[1m]))", "{{stream}}")], "ops", 0, 0),
        panel(2, "Sentiment mix (items/s)", [("sum by (sentiment) (rate(finsent_messages_total[1m]))", "{{sentiment}}")], "ops", 12, 0),
        panel(3, "End-to-end lag p50 / p95 / p99", [
            (f"histogram_quantile({q}, sum by (le) (rate(finsent_end_to_end_lag_seconds_bucket[5m])))", f"p{int(q * 100)}")
            for q in (0.5, 0.95, 0.99)], "s", 0, 8),
        panel(4, "Consumer lag (messages)", [("sum by (topic) (finsent_consumer_lag)", "{{topic}}")], "short", 12, 8),
        panel(5, "Dead letters per second by reason", [("sum by (reason) (rate(finsent_invalid_messages_total[5m]))", "{{reason}}")], "ops", 0, 16),
        panel(6, "Scoring time per batch p95 / batch size p50", [
            ("histogram_quantile(0.95, sum by (le) (rate(finsent_scoring_seconds_bucket[5m])))", "scoring p95 (s)"),
            ("histogram_quantile(0.5, sum by (le) (rate(finsent_batch_size_bucket[5m])))", "batch size p50"),
        ], "short", 12, 16),
        panel(7, "Model in service", [("finsent_model_info", "{{name}} {{version}} {{sha256}}")], "short", 0, 24, 12, 5, "table"),
        panel(8, "Surge alerts fired", [("sum by (dimension, severity) (increase(finsent_alerts_total[1h]))", "{{dimension}} {{severity}}")], "short", 12, 24, 12, 5, "stat"),
    ])  # fmt: skip


def topics() -> dict[str, Any]:
    sel = 'dimension="topic"'
    return dashboard("finsent-topics", "finsent sentiment by topic", [
        panel(1, "Negative share by topic", [(f"max by (key) (finsent_negative_share{{{sel}}})", "{{key}}")], "percentunit", 0, 0, 24),
        panel(2, "Baseline negative share by topic", [(f"max by (key) (finsent_baseline_negative_share{{{sel}}})", "{{key}}")], "percentunit", 0, 8),
        panel(3, "Surge z-score by topic", [(f"max by (key) (finsent_surge_zscore{{{sel}}})", "{{key}}")], "short", 12, 8),
        panel(4, "Items per window by topic", [(f"max by (key) (finsent_window_count{{{sel}}})", "{{key}}")], "short", 0, 16),
        panel(5, "Mean sentiment score by topic", [(f"max by (key) (finsent_sentiment_mean{{{sel}}})", "{{key}}")], "short", 12, 16),
    ])  # fmt: skip


def company() -> dict[str, Any]:
    sel = 'dimension="$dimension", key="$entity"'
    return dashboard("finsent-company", "finsent company drill-down", [
        panel(1, "Negative share vs baseline", [
            (f"max(finsent_negative_share{{{sel}}})", "negative share"),
            (f"max(finsent_baseline_negative_share{{{sel}}})", "baseline"),
        ], "percentunit", 0, 0, 24),
        panel(2, "Surge z-score", [(f"max(finsent_surge_zscore{{{sel}}})", "z")], "short", 0, 8),
        panel(3, "Items per window", [(f"max(finsent_window_count{{{sel}}})", "items")], "short", 12, 8),
        panel(4, "Mean sentiment score", [(f"max(finsent_sentiment_mean{{{sel}}})", "mean score")], "short", 0, 16),
        panel(5, "Surge active", [(f"max by (severity) (finsent_surge_active{{{sel}}})", "{{severity}}")], "short", 12, 16),
    ], [
        variable("dimension", "label_values(finsent_negative_share, dimension)", "dimension"),
        variable("entity", 'label_values(finsent_negative_share{dimension="$dimension"}, key)', "company / key"),
    ])  # fmt: skip


DASHBOARDS = {"finsent-overview.json": overview, "finsent-topics.json": topics, "finsent-company.json": company}


def render() -> dict[str, str]:
    return {name: json.dumps(fn(), indent=2, sort_keys=True) + "\n" for name, fn in DASHBOARDS.items()}


def panel_queries(dash: dict[str, Any], values: dict[str, str]) -> list[tuple[str, str]]:
    """(panel title, PromQL with template variables substituted) for every target."""
    out = []
    for p in dash["panels"]:
        for t in p["targets"]:
            expr = t["expr"]
            for k, v in values.items():
                expr = expr.replace(f"${k}", v)
            out.append((p["title"], expr))
    return out


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
