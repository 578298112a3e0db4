"""Build monitor/data/demo/headlines.csv from the Twitter Financial News Sentiment set (MIT).

The demo must run on a fresh machine without ../shared, so a small,
stratified sample of real finance tweets is committed to the repository;
this script rebuilds it byte for byte (fixed seed, deterministic order).

Stratified means proportional: each label keeps its share of the source
(about 15 % negative), so the demo's baseline looks like a normal stream
and the injected surge stands out the way a real one would.

    python scripts/make_demo_data.py [SOURCE_CSV] [--rows 3000] [--seed 2026]
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SRC = REPO.parent / "shared" / "datasets" / "twitter_financial_news_sentiment" / "train.csv"
OUT_DIR = REPO / "monitor" / "data" / "demo"
# The source labels are words in the shared copy and 0/1/2 in the original upload.
LABELS = {
    "bearish": "negative",
    "bullish": "positive",
    "neutral": "neutral",
    "0": "negative",
    "1": "positive",
    "2": "neutral",
}
MIN_CHARS, MAX_CHARS = 20, 280
MAX_BYTES = 1_000_000

PROVENANCE = """\
# Demo headlines: provenance

`headlines.csv` ({total:,} rows; columns `id,text,label,source`) is a
stratified random sample of the training split of the **Twitter Financial
News Sentiment** data set (Hugging Face `zeroshot/twitter-financial-news-sentiment`),
released by its author under the **MIT License**. The tweets themselves
remain subject to X/Twitter's terms.

- Labels mapped Bearish -> negative, Bullish -> positive, Neutral -> neutral.
- Stratified: each label keeps its share of the source ({counts}).
- Kept: texts of {min_chars}-{max_chars} characters after collapsing runs of
  whitespace (184 source tweets contain line breaks) and dropping duplicates.
- Seed {seed}; `source` is `twitter` for every row; ids `demo-00000`...
- Rebuild: `python scripts/make_demo_data.py` (needs `../shared/datasets`).

The demo and `finsent replay` use `label` only to choose negative texts for
an injected surge; the model never sees the labels.
"""


def clean(text: str) -> str:
    """One line per row keeps the CSV greppable and the tail output tidy."""
    return " ".join(text.split())


def read_source(path: Path) -> list[tuple[str, str]]:
    """(text, label) pairs, cleaned, unique by text, within the length limits."""
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    with open(path, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            label = LABELS.get(str(row.get("label", "")).strip().lower())
            text = clean(row.get("text") or "")
            if label is None or not MIN_CHARS <= len(text) <= MAX_CHARS or text in seen:
                continue
            seen.add(text)
            out.append((text, label))
    return out


def allocate(counts: Counter[str], total: int) -> dict[str, int]:
    """Proportional allocation with largest remainders, so the parts add up to `total` exactly."""
    n = sum(counts.values())
    exact = {k: total * v / n for k, v in counts.items()}
    alloc = {k: int(x) for k, x in exact.items()}
    for k in sorted(exact, key=lambda k: (alloc[k] - exact[k], k))[: total - sum(alloc.values())]:
        alloc[k] += 1
    return alloc


def sample(rows: list[tuple[str, str]], total: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    counts = Counter(label for _, label in rows)
    picked: list[tuple[str, str]] = []
    for label, k in sorted(allocate(counts, min(total, len(rows))).items()):
        pool = [r for r in rows if r[1] == label]
        picked += rng.sample(pool, k)
    rng.shuffle(picked)
    return picked


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", nargs="?", type=Path, default=SRC)
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = ap.parse_args(argv)
    if not args.source.is_file():
        print(f"make_demo_data: source {args.source} not found", file=sys.stderr)
        return 2
    picked = sample(read_source(args.source), args.rows, args.seed)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / "headlines.csv"
    with open(out, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["id", "text", "label", "source"])
        for i, (text, label) in enumerate(picked):
            w.writerow([f"demo-{i:05d}", text, label, "twitter"])
    size = out.stat().st_size
    if size >= MAX_BYTES:
        print(f"make_demo_data: {out} is {size} bytes, over the {MAX_BYTES} budget", file=sys.stderr)
        return 1
    counts = Counter(label for _, label in picked)
    (args.out_dir / "PROVENANCE.md").write_text(
        PROVENANCE.format(
            total=len(picked),
            counts=", ".join(f"{counts[k]:,} {k}" for k in ("negative", "neutral", "positive")),
            min_chars=MIN_CHARS,
            max_chars=MAX_CHARS,
            seed=args.seed,
        ),
        encoding="utf-8",
    )
    print(f"wrote {len(picked)} rows ({size:,} bytes) to {out}: {dict(sorted(counts.items()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
