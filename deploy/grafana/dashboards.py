"""Generate finsent's Grafana dashboards from code (grafana-foundation-sdk, Grafana 11 target).

Why code: three dashboards share one datasource variable, one set of units and
the same PromQL idioms; written by hand as JSON they drift apart and nobody
reviews 2,000-line JSON diffs. The generated JSON is committed (Grafana
provisions it as files) and tests/test_deploy_grafana.py fails when the
committed files differ from what this module generates, and runs every panel's
query against a real Prometheus.

    .venv/bin/python deploy/grafana/dashboards.py          # rewrite deploy/grafana/dashboards/*.json
    .venv/bin/python deploy/grafana/dashboards.py --check  # exit 1 if they are stale

Needs `grafana-foundation-sdk==1769699379!11.6.0` (a plain install picks a
Grafana 10.1 target).

Dashboards read the recording rules (finsent:*:by_key) for trend gauges, so a
key's series survive a rebalance between workers, and raw counters with
$__rate_interval for rates, so they follow the zoom level.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

try:
    from deploy.grafana.queries import annotation_queries, panel_queries, substitute, variable_queries
except ModuleNotFoundError:  # run as a script: deploy/grafana is on sys.path, the repo root may not be
    from queries import annotation_queries, panel_queries, substitute, variable_queries  # type: ignore[no-redef]

__all__ = ["DASHBOARDS", "annotation_queries", "panel_queries", "render", "substitute", "variable_queries"]

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
TAGS = ["finsent"]
SENTIMENT_ALERTS = "NegativeSentimentSurge|NegativeShareHigh"
ALL_ALERTS = f"{SENTIMENT_ALERTS}|ScoringStalled|DeadLetterRateHigh|ConsumerLagHigh|ModelMissing"
# Keep in step with deploy/finsent.toml [surge] and the alert rules' volume guard.
SURGE_K = 3.0
MIN_VOLUME = 20
ITEMS_PER_S = "suffix: items/s"


# ---------------------------------------------------------------- helpers


def q(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> prometheus.Dataquery:
    """One PromQL target; instant queries feed tables and stats that show 'now'."""
    target = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DS)
    if legend:
        target = target.legend_format(legend)
    return target.instant().format(PromQueryFormat.TABLE) if instant else target.range()


def thresholds(*steps: tuple[float | None, str]) -> db.ThresholdsConfig:
    return (
        db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps([dm.Threshold(value=v, color=c) for v, c in steps])
    )


def ts(title: str, *targets: prometheus.Dataquery, unit: str = "short", w: int = 12, h: int = 8) -> timeseries.Panel:
    return (
        timeseries.Panel()
        .title(title)
        .datasource(DS)
        .targets(list(targets))
        .unit(unit)
        .span(w)
        .height(h)
        .line_width(1)
        .fill_opacity(10)
        .legend(cb.VizLegendOptions().display_mode(common.LegendDisplayMode.LIST).placement(common.LegendPlacement.BOTTOM).show_legend(True))
    )  # fmt: skip


def big(title: str, target: prometheus.Dataquery, unit: str = "short", w: int = 4, h: int = 4) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .datasource(DS)
        .with_target(target)
        .unit(unit)
        .span(w)
        .height(h)
        .graph_mode(common.BigValueGraphMode.AREA)
        .color_mode(common.BigValueColorMode.VALUE)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )


def tbl(title: str, *targets: prometheus.Dataquery, renames: dict[str, str], w: int = 24, h: int = 8) -> table.Panel:
    """An instant table: several queries merged on their labels, columns renamed, helper labels hidden."""
    hidden = {"Time": True, "__name__": True, "dimension": True, "job": True}
    return (
        table.Panel()
        .title(title)
        .datasource(DS)
        .targets(list(targets))
        .span(w)
        .height(h)
        .with_transformation(dm.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            dm.DataTransformerConfig(id_val="organize", options={"excludeByName": hidden, "renameByName": renames})
        )
    )


def alerts_annotation(name: str, selector: str, color: str = "red") -> db.AnnotationQuery:
    """Firing finsent alerts as annotations (Prometheus' ALERTS series)."""
    return (
        db.AnnotationQuery()
        .name(name)
        .datasource(DS)
        .enable(True)
        .icon_color(color)
        .expr(f'ALERTS{{alertstate="firing", {selector}}}')
    )


# The SDK's AnnotationQuery has no fields for the Prometheus annotation's
# title/text formats; they are added to the JSON after building.
ANNOTATION_EXTRAS = {
    "step": "60s",
    "titleFormat": "{{alertname}} {{key}}{{topic}}{{instance}}",
    "textFormat": "{{severity}} {{dimension}} {{key}}",
    "tagKeys": "alertname,severity,dimension",
    "useValueForTime": False,
}


def datasource_var() -> db.DatasourceVariable:
    return db.DatasourceVariable("datasource").label("Prometheus").type("prometheus")


def key_var(name: str, label: str, dimension: str, multi: bool) -> db.QueryVariable:
    """A topic or company picker fed by the keys the workers publish windows for."""
    var = (
        db.QueryVariable(name)
        .label(label)
        .datasource(DS)
        .query(f'label_values(finsent_window_count{{dimension="{dimension}"}}, key)')
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_CASE_INSENSITIVE_ASC)
    )
    if multi:
        var = var.multi(True).include_all(True).all_value(".+")
    return var


def base(uid: str, title: str, description: str) -> db.Dashboard:
    return (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .editable()
        .time("now-6h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .with_variable(datasource_var())
        .link(db.DashboardLink("finsent").type(dm.DashboardLinkType.DASHBOARDS).tags(TAGS).as_dropdown(True).keep_time(True).include_vars(False))
    )  # fmt: skip


def share_vs_baseline(title: str, selector: str, legend: str) -> timeseries.Panel:
    """Negative share of the last closed window against the EW baseline the surge rule compares it to."""
    return (
        ts(
            title,
            q(f"finsent:negative_share:by_key{{{selector}}}", legend, "A"),
            q(f"finsent:baseline_negative_share:by_key{{{selector}}}", f"{legend} baseline", "B"),
            unit="percentunit",
        )
        .min(0)
        .max(1)
        .override_by_regexp(".* baseline$", [dm.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]})])
    )  # fmt: skip


def zscore_panel(title: str, selector: str, legend: str) -> timeseries.Panel:
    return (
        ts(title, q(f"finsent:surge_zscore:by_key{{{selector}}}", legend), unit="short")
        .thresholds(thresholds((None, "green"), (SURGE_K, "red")))
        .thresholds_style(cb.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.LINE))
        .description(f"Surge rule: z-score >= {SURGE_K:g} with at least {MIN_VOLUME} items in the window.")
    )


def volume_panel(title: str, selector: str, legend: str) -> timeseries.Panel:
    return (
        ts(title, q(f"finsent:window_volume:by_key{{{selector}}}", legend), unit="short")
        .draw_style(common.GraphDrawStyle.BARS)
        .thresholds(thresholds((None, "red"), (MIN_VOLUME, "green")))
        .thresholds_style(cb.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.LINE))
        .description(f"Items per closed window; alerts need at least {MIN_VOLUME}.")
    )


# ---------------------------------------------------------------- dashboards


def overview_builder() -> db.Dashboard:
    """Is the pipeline healthy: throughput, lag, dead letters, latency, model in service, alerts."""
    rate_i = "[$__rate_interval]"
    d = base(
        "finsent-overview",
        "finsent / Overview",
        "Pipeline health of the finsent workers: throughput, consumer lag, dead letters, latency, model in service.",
    ).annotation(alerts_annotation("finsent alerts", f'alertname=~"{ALL_ALERTS}"'))
    for panel in [
        big("Items scored", q(f"sum(rate(finsent_messages_total{rate_i}))"), ITEMS_PER_S),
        big("Consumer lag", q("sum(finsent_consumer_lag)"), "short")
        .thresholds(thresholds((None, "green"), (1000, "orange"), (10000, "red"))),
        big("Dead letters in range", q("sum(increase(finsent_deadletter_total[$__range]))"), "short")
        .thresholds(thresholds((None, "green"), (1, "orange"))),
        big("Workers up", q('sum(up{job="finsent"})'), "short")
        .thresholds(thresholds((None, "red"), (1, "green"))),
        big("Since last item scored", q("time() - max(finsent_last_scored_timestamp_seconds)"), "s")
        .thresholds(thresholds((None, "green"), (60, "orange"), (120, "red"))),
        big("Model version", q("max by (version) (finsent_model_info)", "{{version}}"), "short")
        .text_mode(common.BigValueTextMode.NAME)
        .description("Version of the model bundle in service (several values while workers swap)."),
        ts("Throughput by input stream", q(f"sum by (stream) (rate(finsent_messages_total{rate_i}))", "{{stream}}"),
           unit=ITEMS_PER_S, w=8),
        ts("Throughput by sentiment", q(f"sum by (sentiment) (rate(finsent_messages_total{rate_i}))", "{{sentiment}}"),
           unit=ITEMS_PER_S, w=8)
        .stacking(cb.StackingConfig().mode(common.StackingMode.NORMAL)),
        ts("Consumer lag by input topic", q("sum by (topic) (finsent_consumer_lag)", "{{topic}}"), w=8),
        ts("Throughput by language", q(f"sum by (lang) (rate(finsent_messages_total{rate_i}))", "{{lang}}"),
           unit=ITEMS_PER_S, w=12)
        .description("Language each item was scored as: the producer's lang field, else its script."),
        ts("Negative share by language",
           q(f'sum by (lang) (rate(finsent_messages_total{{sentiment="negative"}}{rate_i})) '
             f"/ sum by (lang) (rate(finsent_messages_total{rate_i}))", "{{lang}}"),
           unit="percentunit", w=12)
        .description("Each language is scored by the bundle trained on it, so compare trends, not levels."),
        ts("Dead letters by reason", q(f"sum by (reason) (rate(finsent_deadletter_total{rate_i}))", "{{reason}}"),
           unit="suffix: msg/s", w=8),
        ts(
            "End-to-end latency (Kafka timestamp to scored)",
            q(f"histogram_quantile(0.5, sum by (le) (rate(finsent_end_to_end_lag_seconds_bucket{rate_i})))", "p50", "A"),
            q(f"histogram_quantile(0.95, sum by (le) (rate(finsent_end_to_end_lag_seconds_bucket{rate_i})))", "p95", "B"),
            q(f"histogram_quantile(0.99, sum by (le) (rate(finsent_end_to_end_lag_seconds_bucket{rate_i})))", "p99", "C"),
            unit="s", w=8,
        ),
        ts(
            "Scoring time per micro-batch",
            q(f"histogram_quantile(0.5, sum by (le) (rate(finsent_scoring_seconds_bucket{rate_i})))", "p50", "A"),
            q(f"histogram_quantile(0.95, sum by (le) (rate(finsent_scoring_seconds_bucket{rate_i})))", "p95", "B"),
            unit="s", w=8,
        ),
        ts("Mean micro-batch size",
           q(f"sum(rate(finsent_batch_size_sum{rate_i})) / sum(rate(finsent_batch_size_count{rate_i}))", "items/batch"),
           w=8),
        ts("Surge alerts fired by the workers",
           q(f"sum by (dimension, severity) (increase(finsent_alerts_total{rate_i}))", "{{dimension}} {{severity}}"),
           w=8).draw_style(common.GraphDrawStyle.BARS),
        ts("Kafka rebalances (Faust)", q("max by (instance) (faust_total_rebalances)", "{{instance}}"), w=8),
        tbl(
            "Model in service per worker",
            q("max by (instance, name, version, sha256) (finsent_model_info)", ref="A", instant=True),
            q("max by (instance) (finsent_model_loaded)", ref="B", instant=True),
            renames={"Value #A": "info", "Value #B": "loaded"}, w=16, h=6,
        ),
    ]:  # fmt: skip
        d = d.with_panel(panel)
    return d


def topics_builder() -> db.Dashboard:
    """How opinion per topic moves: negative share vs baseline, z-score, volume, sentiment mix."""
    sel = 'dimension="topic", key=~"$topic"'
    d = (
        base(
            "finsent-topics",
            "finsent / Sentiment by topic",
            "Per-topic trend windows: negative share against its baseline, surge z-score, volume, sentiment mix.",
        )
        .with_variable(key_var("topic", "Topic", "topic", multi=True))
        .annotation(alerts_annotation("Topic alerts", f'alertname=~"{SENTIMENT_ALERTS}", dimension="topic", key=~"$topic"'))
    )  # fmt: skip
    for panel in [
        big("Topics in surge", q('count(finsent:surge_active:by_key{dimension="topic"} == 1) or vector(0)'))
        .thresholds(thresholds((None, "green"), (1, "red"))),
        big("All items: negative share", q('finsent:negative_share:by_key{dimension="all"}'), "percentunit"),
        big("All items: baseline", q('finsent:baseline_negative_share:by_key{dimension="all"}'), "percentunit"),
        big("All items: z-score", q('finsent:surge_zscore:by_key{dimension="all"}'))
        .thresholds(thresholds((None, "green"), (SURGE_K, "red"))),
        big("All items: per window", q('finsent:window_volume:by_key{dimension="all"}')),
        big("Scored", q("sum(rate(finsent_messages_total[$__rate_interval]))"), ITEMS_PER_S),
        share_vs_baseline("Negative share vs baseline", sel, "{{key}}"),
        zscore_panel("Surge z-score", sel, "{{key}}"),
        volume_panel("Items per window", sel, "{{key}}"),
        ts("Scored items by sentiment",
           q('sum by (topic, sentiment) (rate(finsent_messages_total{topic=~"$topic"}[$__rate_interval]))',
             "{{topic}} {{sentiment}}"), unit=ITEMS_PER_S),
        ts("Mean sentiment score (-1 negative .. +1 positive)",
           q(f"finsent:sentiment_mean:by_key{{{sel}}}", "{{key}}")).min(-1).max(1),
        ts("Negative ratio over 5 minutes (from counters)",
           q('finsent:topic_negative_ratio:rate5m{topic=~"$topic"}', "{{topic}}"), unit="percentunit").min(0).max(1),
        tbl(
            "Topics now",
            q(f"finsent:negative_share:by_key{{{sel}}}", ref="A", instant=True),
            q(f"finsent:baseline_negative_share:by_key{{{sel}}}", ref="B", instant=True),
            q(f"finsent:surge_zscore:by_key{{{sel}}}", ref="C", instant=True),
            q(f"finsent:window_volume:by_key{{{sel}}}", ref="D", instant=True),
            renames={"key": "Topic", "Value #A": "Negative share", "Value #B": "Baseline", "Value #C": "z-score",
                     "Value #D": "Items in window"},
        ),
    ]:  # fmt: skip
        d = d.with_panel(panel)
    return d


def company_builder() -> db.Dashboard:
    """Drill-down on one company (the `entity` variable; alerts link here with ?var-entity=TICKER)."""
    one = 'dimension="entity", key="$entity"'
    d = (
        base(
            "finsent-company",
            "finsent / Company drill-down",
            "One company's trend windows (pick it in 'Company' or open from an alert), and the companies to watch now.",
        )
        .with_variable(key_var("entity", "Company", "entity", multi=False))
        .annotation(alerts_annotation("Alerts for $entity", f'alertname=~"{SENTIMENT_ALERTS}", dimension="entity", key="$entity"'))
    )  # fmt: skip
    surge_map = dm.ValueMap(
        options={"0": dm.ValueMappingResult(text="quiet", color="green"), "1": dm.ValueMappingResult(text="SURGE", color="red")}
    )  # fmt: skip
    drill = db.DashboardLink("Open ${__data.fields.Company}").url(
        "/d/finsent-company/finsent-company?var-entity=${__data.fields.Company}&${__url_time_range}"
    )
    for panel in [
        big("Negative share", q(f"finsent:negative_share:by_key{{{one}}}"), "percentunit"),
        big("Baseline", q(f"finsent:baseline_negative_share:by_key{{{one}}}"), "percentunit"),
        big("Z-score", q(f"finsent:surge_zscore:by_key{{{one}}}")).thresholds(thresholds((None, "green"), (SURGE_K, "red"))),
        big("Items in last window", q(f"finsent:window_volume:by_key{{{one}}}"))
        .thresholds(thresholds((None, "red"), (MIN_VOLUME, "green"))),
        big("Mean sentiment", q(f"finsent:sentiment_mean:by_key{{{one}}}")).min(-1).max(1),
        big("Surge", q(f"max(finsent:surge_active:by_key{{{one}}}) or vector(0)")).mappings([surge_map]),
        share_vs_baseline("$entity: negative share vs baseline", one, "$entity"),
        zscore_panel("$entity: surge z-score", one, "$entity"),
        volume_panel("$entity: items per window", one, "$entity"),
        ts("$entity: mean sentiment score", q(f"finsent:sentiment_mean:by_key{{{one}}}", "$entity")).min(-1).max(1),
        tbl(
            "Companies by z-score now (click to drill down)",
            q('sort_desc(topk(20, finsent:surge_zscore:by_key{dimension="entity"}))', ref="A", instant=True),
            q('finsent:negative_share:by_key{dimension="entity"}', ref="B", instant=True),
            q('finsent:window_volume:by_key{dimension="entity"}', ref="C", instant=True),
            renames={"key": "Company", "Value #A": "z-score", "Value #B": "Negative share", "Value #C": "Items in window"},
            h=10,
        ).data_links([drill]),
    ]:  # fmt: skip
        d = d.with_panel(panel)
    return d


# ---------------------------------------------------------------- output


def to_dict(builder: db.Dashboard) -> dict[str, Any]:
    """Build, number the panels (stable ids), add the annotation fields the SDK lacks."""
    data: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    for i, panel in enumerate(data.get("panels", []), start=1):
        panel["id"] = i
    for ann in data.get("annotations", {}).get("list", []):
        if ann.get("expr"):
            ann.update(ANNOTATION_EXTRAS)
    return data


def overview() -> dict[str, Any]:
    return to_dict(overview_builder())


def topics() -> dict[str, Any]:
    return to_dict(topics_builder())


def company() -> dict[str, Any]:
    return to_dict(company_builder())


# File name -> the dashboard's JSON model.
DASHBOARDS: dict[str, Callable[[], dict[str, Any]]] = {
    "finsent-overview.json": overview,
    "finsent-topics.json": topics,
    "finsent-company.json": company,
}


def render() -> dict[str, str]:
    """File name -> committed JSON text (sorted keys: stable, reviewable diffs)."""
    return {name: json.dumps(fn(), indent=2, sort_keys=True) + "\n" for name, fn in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Generate finsent's Grafana dashboards")
    p.add_argument("--check", action="store_true", help="exit 1 if the committed JSON differs from the generated")
    p.add_argument("--out", type=Path, default=OUT_DIR, help="output directory")
    args = p.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"stale dashboards (run deploy/grafana/dashboards.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
