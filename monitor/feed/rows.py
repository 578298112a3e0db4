"""Reading a file of financial texts (CSV, JSON lines, Parquet) into rows to replay.

Bad files are a `FeedError` with one line that names the file and what is wrong.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)


csv.field_size_limit(16 * 1024 * 1024)

Timestamps = Literal["now", "preserve"]
SurgeKind = Literal["entity", "all", "topic"]

# Optional DESIGN.md item fields copied from the file when present.
PASSTHROUGH_FIELDS = ("title", "url", "lang", "author")
NEGATIVE_LABELS = frozenset({"negative", "neg", "bearish"})
CSV_SUFFIXES = {".csv": ",", ".tsv": "\t"}
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
PARQUET_SUFFIXES = (".parquet", ".pq")


class FeedError(ValueError):
    """A file or option the feed cannot use; the message is one line for the user."""


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class Row:
    """One usable line of the input file, normalised to the fields replay needs."""

    id: str
    text: str
    label: str | None = None
    source: str | None = None
    published_at: int | str | None = None
    tickers: tuple[str, ...] = ()
    topic: str | None = None
    extra: tuple[tuple[str, Any], ...] = ()
    # The company the text is about, as the text writes it (an annotation, e.g. SEntFiN's entity).
    entity: str | None = None

    @property
    def negative(self) -> bool:
        return (self.label or "").strip().lower() in NEGATIVE_LABELS


@dataclass(frozen=True)
class RowSet:
    path: Path
    rows: list[Row]
    skipped: int  # rows without a usable text
    columns: list[str]


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=CSV_SUFFIXES[path.suffix.lower()])
        return list(reader.fieldnames or []), list(reader)


def _read_json_lines(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise FeedError(f"{path} is not valid JSON: {exc}") from None
        records = [r for r in data if isinstance(r, dict)]
    else:
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                raise FeedError(f"{path}:{n} is not a JSON line") from None
            if not isinstance(obj, dict):
                raise FeedError(f"{path}:{n} is not a JSON object")
            records.append(obj)
    columns = list(dict.fromkeys(k for r in records for k in r))
    return columns, records


def _read_parquet(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise FeedError(f"reading Parquet ({path.name}) needs pyarrow: pip install pyarrow") from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types
        raise FeedError(f"cannot read Parquet file {path}: {exc}") from None
    return list(table.column_names), table.to_pylist()


def _as_tickers(value: Any) -> tuple[str, ...]:
    """Tickers from a list, a JSON list in a CSV cell, or 'AAPL;MSFT' / 'AAPL,MSFT' / 'AAPL MSFT'."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("["):
            try:
                value = json.loads(s)
            except ValueError:
                value = re.split(r"[\s,;|]+", s.strip("[]"))
        else:
            value = re.split(r"[\s,;|]+", s)
    if not isinstance(value, list | tuple):
        value = [value]
    out = [str(v).strip().strip("'\"").lstrip("$").upper() for v in value]
    return tuple(dict.fromkeys(t for t in out if t))


def _as_time(value: Any) -> int | str | None:
    """Epoch milliseconds stay numbers (CSV gives strings); anything else passes as text (ISO-8601)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    if hasattr(value, "timestamp"):  # datetime from Parquet
        return int(value.timestamp() * 1000)
    s = str(value).strip()
    return int(s) if s.isdigit() else s


def _cell(record: Mapping[str, Any], col: str | None) -> Any:
    if not col:
        return None
    v = record.get(col)
    return None if v is None or (isinstance(v, str) and not v.strip()) else v


def rows_from_records(
    records: Iterable[Mapping[str, Any]],
    *,
    stem: str = "rows",
    text_col: str = "text",
    id_col: str | None = "id",
    label_col: str | None = "label",
    time_col: str | None = "published_at",
    topic_col: str | None = "topic",
    entity_col: str | None = "entity",
    source: str | None = None,
) -> tuple[list[Row], int]:
    """Records (dicts) to `Row`s, plus how many were skipped for an empty text.

    Blank texts are skipped, not fatal: real exports have them. Rows without
    an id get `<stem>-<i>` (i = 0-based position in the file), stable across
    runs so a replayed item can be traced back to its line.
    """
    rows: list[Row] = []
    skipped = 0
    for i, rec in enumerate(records):
        text = rec.get(text_col)
        if not isinstance(text, str) or not text.strip():
            skipped += 1
            continue
        rid = _cell(rec, id_col)
        label = _cell(rec, label_col)
        topic = _cell(rec, topic_col)
        entity = _cell(rec, entity_col)
        src = _cell(rec, "source")
        rows.append(
            Row(
                id=str(rid) if rid is not None else f"{stem}-{i}",
                text=text,
                label=str(label) if label is not None else None,
                source=str(src) if src is not None else source,
                published_at=_as_time(_cell(rec, time_col)),
                tickers=_as_tickers(rec.get("tickers")),
                topic=str(topic) if topic is not None else None,
                extra=tuple((k, rec[k]) for k in PASSTHROUGH_FIELDS if _cell(rec, k) is not None),
                entity=str(entity).strip() if entity is not None else None,
            )
        )
    return rows, skipped


def load_rows(
    path: str | Path,
    *,
    text_col: str = "text",
    id_col: str | None = None,
    label_col: str | None = "label",
    time_col: str | None = "published_at",
    topic_col: str | None = "topic",
    entity_col: str | None = "entity",
    source: str | None = None,
) -> RowSet:
    """Read a CSV/TSV, JSONL (or JSON array) or Parquet file into `Row`s.

    A missing file, an unknown format, a missing named column or a file
    without any text is a `FeedError` with one line. `id_col=None` uses an
    `id` column when there is one, else `<file-stem>-<row>` ids.
    """
    p = Path(path)
    if not p.is_file():
        raise FeedError(f"input file {p} does not exist")
    suffix = p.suffix.lower()
    try:
        if suffix in CSV_SUFFIXES:
            columns, records = _read_csv(p)
        elif suffix in JSON_SUFFIXES:
            columns, records = _read_json_lines(p)
        elif suffix in PARQUET_SUFFIXES:
            columns, records = _read_parquet(p)
        else:
            raise FeedError(f"{p}: unknown file type '{p.suffix}' (use .csv, .tsv, .jsonl, .json or .parquet)")
    except UnicodeDecodeError:
        raise FeedError(f"{p} is not UTF-8 text") from None
    except csv.Error as exc:
        raise FeedError(f"{p} is not valid CSV: {exc}") from None
    except OSError as exc:
        raise FeedError(f"cannot read {p}: {exc}") from None
    if text_col not in columns:
        raise FeedError(f"{p} has no '{text_col}' column (columns: {', '.join(columns) or 'none'}); use --text-col")
    if id_col is not None and id_col not in columns:
        raise FeedError(f"{p} has no '{id_col}' column (columns: {', '.join(columns)}); use --id-col")
    rows, skipped = rows_from_records(
        records,
        stem=p.stem,
        text_col=text_col,
        id_col=id_col if id_col is not None else ("id" if "id" in columns else None),
        label_col=label_col,
        time_col=time_col,
        topic_col=topic_col,
        entity_col=entity_col,
        source=source,
    )
    if not rows:
        raise FeedError(f"{p} holds no rows with text in column '{text_col}'")
    return RowSet(p, rows, skipped, columns)
