"""Labeled text loading: CSV / JSONL / Parquet, label mapping, bad-row report.

Every text goes through `monitor.model.normalize.normalize_text`, the function
the worker applies at serving time, so training and serving see the same
strings. Bad rows (no text, unknown label) are skipped and counted.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from monitor.model.bundle import SENTIMENT_LABELS
from monitor.model.normalize import normalize_text

csv.field_size_limit(16 * 1024 * 1024)

# One sentiment scale for every source (datasets/README.md).
SENTIMENT_MAP = {
    "negative": "negative", "bearish": "negative", "neg": "negative",
    "neutral": "neutral", "neu": "neutral",
    "positive": "positive", "bullish": "positive", "pos": "positive",
}  # fmt: skip
# The twitter sentiment set's numeric labels: 0 Bearish, 1 Bullish, 2 Neutral.
TWITTER_SENTIMENT_INT = {"0": "negative", "1": "positive", "2": "neutral"}

TOPIC_LABELS = (
    "Analyst Update", "Fed | Central Banks", "Company | Product News", "Treasuries | Corporate Debt", "Dividend",
    "Earnings", "Energy | Oil", "Financials", "Currencies", "General News | Opinion", "Gold | Metals | Materials",
    "IPO", "Legal | Regulation", "M&A | Investments", "Macro", "Markets", "Politics", "Personnel Change",
    "Stock Commentary", "Stock Movement",
)  # fmt: skip
TASK_LABELS = {"sentiment": SENTIMENT_LABELS, "topic": TOPIC_LABELS}


class DataError(ValueError):
    """A file that cannot be used at all; the message is one line."""


# raw label, text -> (label name or None, reason counted in `skipped` when None)
LabelFn = Callable[[object, str], tuple[str | None, str]]


@dataclass
class Examples:
    """Rows of one task. `langs` / `origins` (one per row, or empty) let a mix of datasets be
    evaluated per language and per dataset; a plain file load leaves them empty."""

    task: str
    texts: list[str]
    labels: list[int]
    source: str
    skipped: Counter[str] = field(default_factory=Counter)
    langs: list[str] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for t, y in zip(self.texts, self.labels, strict=True):
            h.update(t.encode())
            h.update(b"\x1f%d\x1e" % y)
        return h.hexdigest()

    def subset(self, keep: list[int]) -> None:
        """Keep only these row indices (in this order), row metadata included."""
        self.texts = [self.texts[i] for i in keep]
        self.labels = [self.labels[i] for i in keep]
        if self.langs:
            self.langs = [self.langs[i] for i in keep]
        if self.origins:
            self.origins = [self.origins[i] for i in keep]

    def counts(self) -> dict[str, int]:
        labels = TASK_LABELS[self.task]
        c = Counter(self.labels)
        return {labels[i]: c.get(i, 0) for i in range(len(labels))}


def _read_rows(path: Path) -> list[dict[str, object]]:
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".ndjson"):
            rows = []
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        try:
                            obj = json.loads(line)
                        except ValueError:
                            obj = None
                        rows.append(obj if isinstance(obj, dict) else {})
            return rows
        if suffix == ".parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError:
                raise DataError("reading Parquet needs pyarrow: pip install pyarrow") from None
            try:
                return pq.read_table(path).to_pylist()
            except Exception as exc:  # pyarrow raises its own ArrowInvalid/ArrowIOError family
                raise DataError(f"cannot read {path} as Parquet: {str(exc).splitlines()[0]}") from None
        with open(path, encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh))
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text") from None
    except (OSError, csv.Error) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def map_label(task: str, raw: object) -> str | None:
    if raw is None:
        return None
    s = str(raw).strip()
    if task == "sentiment":
        return SENTIMENT_MAP.get(s.lower()) or TWITTER_SENTIMENT_INT.get(s)
    if s in TOPIC_LABELS:
        return s
    if s.isdigit() and int(s) < len(TOPIC_LABELS):
        return TOPIC_LABELS[int(s)]
    return None


def _default_label_fn(task: str) -> LabelFn:
    def fn(raw: object, _text: str) -> tuple[str | None, str]:
        return map_label(task, raw), "unknown_label"

    return fn


def load_examples(path: str | Path, task: str, text_col: str = "text", label_col: str = "label",
                  label_fn: LabelFn | None = None) -> Examples:  # fmt: skip
    """Read a labeled file for one task; bad rows are skipped and counted by reason.

    label_fn maps (raw label, raw text) to a label name, or to None and the reason the row is
    skipped: datasets whose labels need their own mapping (FinFE's 0/1/2 order differs from
    the twitter set's; FinNL's tags go through the taxonomy) pass theirs (training/sources.py).
    """
    if task not in TASK_LABELS:
        raise DataError(f"unknown task '{task}' (choose {', '.join(TASK_LABELS)})")
    p = Path(path)
    rows = _read_rows(p)
    if rows and text_col not in rows[0] and not any(text_col in r for r in rows[:50]):
        raise DataError(f"{p} has no column '{text_col}'")
    labels = TASK_LABELS[task]
    fn = label_fn or _default_label_fn(task)
    out = Examples(task=task, texts=[], labels=[], source=p.name)
    for r in rows:
        text = r.get(text_col)
        if not isinstance(text, str) or not text.strip():
            out.skipped["empty_text"] += 1
            continue
        lab, reason = fn(r.get(label_col), text)
        if lab is None:
            out.skipped[reason] += 1
            continue
        clean = normalize_text(text)
        if not clean:
            out.skipped["empty_after_normalisation"] += 1
            continue
        out.texts.append(clean)
        out.labels.append(labels.index(lab))
    if not out.texts:
        raise DataError(f"{p} has no usable rows for task '{task}' (skipped: {dict(out.skipped)})")
    return out
