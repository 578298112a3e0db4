"""Dashboard PromQL as Grafana would send it, for tests that run every query against a real Prometheus.

Separate from dashboards.py so the query check needs only the committed JSON,
not grafana-foundation-sdk.
"""

from __future__ import annotations

import re
from typing import Any

# What Grafana puts in for its built-in variables when a test runs a panel's
# query outside Grafana (1m covers several scrapes at any interval up to 15 s).
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}
VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def substitute(expr: str, dash: dict[str, Any], values: dict[str, str] | None = None) -> str:
    """PromQL as Grafana would send it: variables from `values`, else a multi-value variable's
    "All" value, else the built-in defaults above. An unknown variable is an error, not a silent gap."""
    given = {**BUILTINS, **(values or {})}
    for var in dash.get("templating", {}).get("list", []):
        if var.get("includeAll") and var["name"] not in given:
            given[var["name"]] = var.get("allValue") or ".*"

    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in given:
            raise KeyError(f"no value for ${name} in {expr!r}")
        return given[name]

    return VAR.sub(one, expr)


def panel_queries(dash: dict[str, Any], values: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(panel title, PromQL with variables substituted) for every panel target."""
    return [
        (p.get("title", ""), substitute(t["expr"], dash, values))
        for p in dash.get("panels", [])
        for t in p.get("targets", [])
        if t.get("expr")
    ]


def annotation_queries(dash: dict[str, Any], values: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(annotation name, PromQL): these return data only while an alert fires."""
    return [
        (a.get("name", ""), substitute(a["expr"], dash, values))
        for a in dash.get("annotations", {}).get("list", [])
        if a.get("expr")
    ]


def variable_queries(dash: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(variable, series selector, label) of every `label_values(selector, label)` query variable."""
    out = []
    for var in dash.get("templating", {}).get("list", []):
        query = var.get("query")
        if var.get("type") == "query" and isinstance(query, str):
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
            if not m:
                raise ValueError(f"unsupported variable query {query!r}")
            out.append((var["name"], m.group(1), m.group(2)))
    return out
