"""The demo's live view and final summary, rendered without a broker.

A new user's terminal is 80x24 as often as it is large: the injected
surge's alert must be on screen there, pinned above other alerts and the
trends table, and the summary at the end must name every alert, not the
last few. `render` and `summary_lines` are pure, so these tests build a
state by hand and read the rendered lines.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from monitor.cli.demo_view import DemoState, progress_line, render, summary_lines

W0 = 1_700_000_000_000  # wall ms when the demo started
T0 = 1_000.0  # monotonic time when the demo started
TOPICS = ["Stock Movement", "Earnings", "Treasuries | Corporate Debt", "Fed | Central Banks", "Company | Product News",
          "M&A | Investments"]  # fmt: skip
TICKERS = ["AAPL", "MSFT", "AMZN", "NVDA", "META", "GOOGL", "JPM", "GS", "BA", "UBER", "NFLX", "DIS"]
EVIDENCE = [
    {"id": "surge-tsla-1", "score": -0.97, "text": "Tesla Q3 loss widens to Rs 616.6 crore"},
    {"id": "surge-tsla-2", "score": -0.95, "text": "Tesla shares tank over 6% as Q3 net dips"},
    {"id": "surge-tsla-3", "score": -0.93, "text": "Disappointing Q4 show pulls Tesla down to 2-year low"},
]


def alert(dimension: str, key: str, start_s: float, state: str = "firing", **kw: Any) -> dict[str, Any]:
    start = W0 + int(start_s * 1000)
    rec = {
        "state": state,
        "severity": "warning",
        "dimension": dimension,
        "key": key,
        "window_start": start,
        "window_end": start + 10_000,
        "negative_share": 0.5,
        "baseline_mean": 0.2,
        "zscore": 4.0,
        "count": 30,
        "alert_id": f"{dimension}:{key}:{start}",
        "started_at": start,
        "at": start + 12_000,
        "evidence": [],
    }
    rec.update(kw)
    return rec


def busy_state(*, surge_state: str = "firing", others: int = 14) -> DemoState:
    """A demo 120 s in: 40 keys with trends, the surge alert among `others` alerts, several newer than it."""
    state = DemoState(surge_key="TSLA", surge_start_s=45, surge_duration_s=40, started=T0, started_wall_ms=W0)
    for i in range(300):
        state.on_scored({"sentiment": {"label": ("negative", "neutral", "positive")[i % 3]}, "lag_ms": 80}, T0 + i)
    trends = [("all", "all")] + [("topic", t) for t in TOPICS] + [("entity", t) for t in [*TICKERS, "TSLA"]]
    trends += [("entity", f"X{i:02d}") for i in range(40 - len(trends))]
    for n, (dim, key) in enumerate(trends):
        state.on_trend(
            {"dimension": dim, "key": key, "window_end": W0 + 110_000, "count": 50 - n, "negative_share": 0.2,
             "baseline_mean": 0.18, "zscore": 0.4, "mean_score": -0.05}
        )  # fmt: skip
    keys = [("topic", t) for t in TOPICS] + [("entity", t) for t in TICKERS]
    # Half the other alerts start before the surge's, half after: it is not the newest.
    for i, (dim, key) in enumerate(keys[: others // 2]):
        state.on_alert(alert(dim, key, 20 + i))
        state.on_alert(alert(dim, key, 20 + i, "resolved", window_end=W0 + (40 + i) * 1000))
    surge = alert(
        "entity", "TSLA", 50, severity="critical", negative_share=0.92, baseline_mean=0.1, zscore=16.4,
        count=41, evidence=EVIDENCE,
    )  # fmt: skip
    state.on_alert(surge)
    for dim, key in keys[others // 2 : others]:
        state.on_alert(alert(dim, key, 70))
    if surge_state == "resolved":
        state.on_alert({**surge, "state": "resolved", "window_end": W0 + 100_000, "at": W0 + 101_000, "evidence": []})
    return state


def view_lines(state: DemoState, width: int, height: int, now: float = T0 + 120) -> list[str]:
    console = Console(width=width, height=height, record=True, file=io.StringIO(), color_system=None)
    console.print(render(state, width, height, now))
    return console.export_text().splitlines()


@pytest.mark.parametrize(("width", "height"), [(80, 24), (160, 60), (100, 30), (80, 12)])
def test_the_surge_alert_is_on_screen_whatever_the_terminal(width: int, height: int) -> None:
    lines = view_lines(busy_state(), width, height)
    assert len(lines) < height  # one line to spare: a full screen would scroll the status line away
    assert all(len(line) <= width for line in lines)
    surge = [i for i, line in enumerate(lines) if "FIRING" in line and "entity:TSLA" in line]
    assert len(surge) == 1, "\n".join(lines)
    # Pinned: the first alert in the panel (status line, panel border, then it).
    assert surge[0] == 2, "\n".join(lines)
    if height >= 24:
        assert "Tesla Q3 loss widens" in lines[surge[0] + 1]  # its evidence follows it
        assert "critical" in lines[surge[0]] and "+50 s" in lines[surge[0]]


def test_80x24_lists_other_alerts_compactly_and_counts_the_rest() -> None:
    state = busy_state(others=14)
    lines = view_lines(state, 80, 24)
    text = "\n".join(lines)
    more = [line for line in lines if "more alert(s)" in line]
    assert len(more) == 1, text
    listed = sum(1 for line in lines if line.lstrip("│ ").startswith(("FIRING", "RESOLVED")))
    hidden = int(more[0].split("and ")[1].split(" more")[0])
    assert listed + hidden == 15  # the surge's and 14 others: none lost, the rest counted
    # Firing alerts come before resolved ones, and the table gets the lines left over.
    states = [line.lstrip("│ ").split()[0] for line in lines[3:] if line.lstrip("│ ").startswith(("FIRING", "RESOL"))]
    assert states == sorted(states, key=lambda s: s != "FIRING")
    assert any(line.startswith("all ") for line in lines), text


def test_160x60_shows_every_alert_and_the_surge_company_first_in_the_table() -> None:
    lines = view_lines(busy_state(others=14), 160, 60)
    text = "\n".join(lines)
    assert "more alert(s)" not in text
    assert sum(1 for line in lines if line.lstrip("│ ").startswith(("FIRING", "RESOLVED"))) == 15
    table = [line for line in lines if line.startswith(("entity ", "all ", "topic "))]
    assert table[0].split()[:2] == ["entity", "TSLA"] and table[1].split()[:2] == ["all", "all"]
    # Then the keys firing now, then topics by volume: not one-item keys with a big z.
    assert {row.split()[1] for row in table[2:9]} == {"MSFT", "AMZN", "NVDA", "META", "GOOGL", "JPM", "GS"}
    assert table[9].startswith("topic ")
    assert len(table) > 20


def test_long_topic_names_never_cut_the_numbers_short() -> None:
    state = DemoState(surge_key="TSLA", started=T0, started_wall_ms=W0)
    for n, topic in enumerate(["Treasuries | Corporate Debt", "General News | Opinion", "Company | Product News"]):
        state.on_trend(
            {"dimension": "topic", "key": topic, "window_end": W0 + 60_000, "count": 300 - n, "negative_share": 0.25,
             "baseline_mean": 0.125, "zscore": -1.5, "mean_score": -0.125}
        )  # fmt: skip
    lines = view_lines(state, 80, 24, now=T0 + 60)
    rows = [line for line in lines if line.startswith("topic ")]
    assert len(rows) == 3, "\n".join(lines)
    for row in rows:
        assert row.split()[-4:] == ["0.25", "0.12", "-1.5", "-0.12"] and row.split()[-5] in ("300", "299", "298")
    assert "Treasuries | Corpor" in rows[0]  # the key column keeps most of the room


def test_a_resolved_surge_stays_pinned_as_resolved() -> None:
    lines = view_lines(busy_state(surge_state="resolved"), 80, 24)
    assert "RESOLVED" in lines[2] and "entity:TSLA" in lines[2] and "->" in lines[2], "\n".join(lines)
    assert "Tesla" in lines[3]  # the evidence stays readable after the surge resolved


def test_before_the_alert_the_pinned_line_says_where_the_surge_stands() -> None:
    state = DemoState(surge_key="TSLA", surge_start_s=45, surge_duration_s=40, started=T0, started_wall_ms=W0)
    lines = view_lines(state, 80, 24, now=T0 + 30)
    assert "entity:TSLA" in lines[2] and "no alert yet" in lines[2] and "starts in 15 s" in lines[2]
    state.on_trend({"dimension": "entity", "key": "TSLA", "count": 9, "negative_share": 0.78, "zscore": 2.5})
    lines = view_lines(state, 160, 60, now=T0 + 60)
    assert "being injected (45-85 s)" in lines[2] and "z +2.5" in lines[2]


def test_render_is_pure() -> None:
    state = busy_state()
    assert view_lines(state, 80, 24) == view_lines(state, 80, 24)


def test_the_summary_names_every_alert_with_its_state_and_times() -> None:
    state = busy_state(others=14)
    for rec in list(state.episodes.values())[:3]:  # at-least-once delivery: duplicates change nothing
        state.on_alert(rec["firing"])
    lines = summary_lines(state)
    text = "\n".join(lines)
    assert lines[0].startswith("scored by language: "), text
    assert lines[1].startswith("alerts: 15 (8 still firing)"), text
    rows = [line for line in lines[2:] if line[3:].startswith(("firing", "resolved"))]
    assert len(rows) == 15, text
    for ep in state.episodes.values():
        (row,) = [r for r in rows if f" {ep['dimension']}:{ep['key']} " in r]
        assert ep["state"] in row and ep["severity"] in row and "started " in row
        assert ("resolved -" in row) == (ep["state"] == "firing")
    (tsla,) = [r for r in rows if "entity:TSLA" in r]
    assert tsla.startswith(" * firing") and "critical" in tsla and "(+50 s)" in tsla
    # The surge's outcome and its evidence headlines close the report.
    assert "injected surge" in text and "alert firing" in text
    assert all(ev["text"] in text for ev in EVIDENCE)


def test_the_summary_counts_items_per_language() -> None:
    state = DemoState(surge_key="TSLA", started=T0, started_wall_ms=W0)
    assert summary_lines(state)[0] == "scored by language: none yet"
    for i, lang in enumerate(["en", "zh", "en", None]):
        state.on_scored({"sentiment": {"label": "neutral"}, **({"lang": lang} if lang else {})}, T0 + i)
    assert summary_lines(state)[0] == "scored by language: en 2, zh 1, ? 1"
    assert "; en 2, zh 1, ? 1)  alerts 0" in progress_line(state, T0 + 3)


def test_the_summary_reports_a_resolved_surge_and_a_missing_one() -> None:
    lines = summary_lines(busy_state(surge_state="resolved"))
    (tsla,) = [r for r in lines if "entity:TSLA" in r and r.startswith(" *")]
    assert "resolved" in tsla and "resolved 2023" not in tsla and "(+100 s)" in tsla
    empty = DemoState(surge_key="TSLA", started=T0, started_wall_ms=W0)
    assert summary_lines(empty)[-1].startswith("injected surge (entity:TSLA, 45-85 s): no alert")
