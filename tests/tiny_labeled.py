"""Tiny labeled topic and sentiment CSVs in the twitter sets' label names, for training tests."""

from __future__ import annotations

from pathlib import Path


def write_labeled(d: Path, repeat: int = 8) -> dict[str, Path]:
    """topic.csv and sentiment.csv with 3 * repeat rows each, the three labels in turn; returns their paths."""
    topics = ["Earnings", "Macro", "IPO"]
    sents = ["Bearish", "Bullish", "Neutral"]
    rows_t = [
        (f"company {w} report number {i}", topics[i % 3]) for i, w in enumerate(["alpha", "beta", "gamma"] * repeat)
    ]
    rows_s = [(f"stock {w} move {i}", sents[i % 3]) for i, w in enumerate(["up", "down", "flat"] * repeat)]
    out = {}
    for name, rows in (("topic", rows_t), ("sentiment", rows_s)):
        p = d / f"{name}.csv"
        p.write_text("text,label\n" + "\n".join(f'"{t}",{y}' for t, y in rows) + "\n")
        out[name] = p
    return out
