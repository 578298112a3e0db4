"""Build monitor/data/demo/headlines.csv from the twitter financial news sentiment set (MIT).

The demo must run on a fresh machine without ../shared, so a stratified
sample of real finance tweets is committed; this script rebuilds it.
"""

from __future__ import annotations

import csv
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SRC = REPO.parent / "shared" / "datasets" / "twitter_financial_news_sentiment" / "train.csv"
OUT = REPO / "monitor" / "data" / "demo" / "headlines.csv"
MAP = {"Bearish": "negative", "Bullish": "positive", "Neutral": "neutral", "0": "negative", "1": "positive",
       "2": "neutral"}  # fmt: skip
PER_LABEL = {"negative": 700, "neutral": 1600, "positive": 700}


def main() -> int:
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else SRC
    with open(src, encoding="utf-8", newline="") as fh:
        rows = [(r["text"], MAP.get(r["label"].strip())) for r in csv.DictReader(fh)]
    rng = random.Random(2026)
    picked = []
    for label, n in PER_LABEL.items():
        pool = [t for t, y in rows if y == label and 20 <= len(t) <= 280]
        picked += [(t, label) for t in rng.sample(pool, n)]
    rng.shuffle(picked)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text", "label", "source"])
        for i, (t, y) in enumerate(picked):
            w.writerow([f"demo-{i:05d}", t, y, "twitter"])
    print(f"wrote {len(picked)} rows to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
