"""Validation of raw input messages: bytes in, an Item or an Invalid reason out.

Never raises on data. Reasons are a small fixed set (they are Prometheus
label values and dead-letter `error` codes); the detail is one human line.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

REASONS = (
    "empty",
    "too_large",
    "not_utf8",
    "not_json",
    "not_object",
    "too_deep",
    "missing_id",
    "bad_id",
    "missing_text",
    "empty_text",
    "bad_type",
    "bad_timestamp",
    "processing_error",
)
OPTIONAL_STR = ("title", "source", "url", "lang", "author")
KNOWN = {"id", "text", "published_at", "tickers", *OPTIONAL_STR}
MAX_ID_CHARS = 256
MAX_TICKERS = 50
DEADLETTER_RAW_BYTES = 64 * 1024
# Epoch values below this are seconds, above are milliseconds (1e11 s is year 5138).
_EPOCH_MS_THRESHOLD = 100_000_000_000
_TICKER = re.compile(r"^[A-Z0-9][A-Z0-9.\-]{0,11}$")


@dataclass(frozen=True)
class Invalid:
    reason: str
    detail: str


@dataclass(frozen=True)
class Item:
    id: str
    text: str
    title: str | None = None
    source: str | None = None
    url: str | None = None
    lang: str | None = None
    author: str | None = None
    published_ms: int | None = None
    tickers: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    raw_published: Any = None

    def to_dict(self) -> dict[str, Any]:
        """The item as JSON fields: known fields (normalised tickers) plus unknown ones unchanged."""
        out: dict[str, Any] = dict(self.extra)
        out["id"] = self.id
        out["text"] = self.text
        for name in OPTIONAL_STR:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.raw_published is not None:
            out["published_at"] = self.raw_published
        if self.tickers:
            out["tickers"] = list(self.tickers)
        return out


def _depth_ok(raw: str, max_depth: int) -> bool:
    """Bracket nesting depth outside strings, without recursion (json would hit RecursionError)."""
    depth = 0
    in_str = False
    escape = False
    for ch in raw:
        if in_str:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > max_depth:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def parse_timestamp(value: Any) -> int | None:
    """ISO-8601 (naive = UTC) or epoch seconds/ms as int, float or digit string -> epoch ms. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError("boolean is not a timestamp")
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("not a finite number")
        v = float(value)
        if v < 0:
            raise ValueError("negative epoch")
        return int(v if v >= _EPOCH_MS_THRESHOLD else v * 1000)
    if isinstance(value, str):
        s = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", s):
            return parse_timestamp(float(s))
        if s.endswith(("Z", "z")):
            s = s[:-1] + "+00:00"
        dt = datetime.fromisoformat(s)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return int(dt.timestamp() * 1000)
    raise ValueError(f"{type(value).__name__} is not a timestamp")


def _tickers(value: Any) -> tuple[str, ...] | Invalid:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        return Invalid("bad_type", "'tickers' must be a list of strings")
    out: list[str] = []
    for t in value:
        sym = t.strip().lstrip("$").upper()
        if _TICKER.match(sym) and sym not in out:
            out.append(sym)
        if len(out) >= MAX_TICKERS:
            break
    return tuple(out)


def validate(
    raw: bytes | None,
    *,
    kafka_ts_ms: int | None = None,
    max_bytes: int = 1_000_000,
    max_depth: int = 32,
    now_ms: int = 0,
) -> Item | Invalid:
    """Check one raw message against the input contract (DESIGN.md, "Input item")."""
    if raw is None or len(raw) == 0:
        return Invalid("empty", "message value is empty")
    if len(raw) > max_bytes:
        return Invalid("too_large", f"message is {len(raw)} bytes, limit {max_bytes}")
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Invalid("not_utf8", f"invalid UTF-8 at byte {exc.start}")
    if not _depth_ok(s, max_depth):
        return Invalid("too_deep", f"JSON nested deeper than {max_depth}")
    try:
        obj = json.loads(s)
    except (ValueError, RecursionError) as exc:
        return Invalid("not_json", f"not JSON: {str(exc)[:120]}")
    if not isinstance(obj, dict):
        return Invalid("not_object", f"JSON {type(obj).__name__} where an object was expected")
    if "id" not in obj or obj["id"] is None:
        return Invalid("missing_id", "field 'id' is required")
    ident = obj["id"]
    if isinstance(ident, bool) or not isinstance(ident, str | int):
        return Invalid("bad_id", f"'id' must be a string, got {type(ident).__name__}")
    ident = str(ident)
    if not ident.strip() or len(ident) > MAX_ID_CHARS:
        return Invalid("bad_id", f"'id' must be 1..{MAX_ID_CHARS} characters")
    if "text" not in obj or obj["text"] is None:
        return Invalid("missing_text", "field 'text' is required")
    text = obj["text"]
    if not isinstance(text, str):
        return Invalid("bad_type", f"'text' must be a string, got {type(text).__name__}")
    if not text.strip():
        return Invalid("empty_text", "'text' is empty after trimming")
    opts: dict[str, str | None] = {}
    for name in OPTIONAL_STR:
        v = obj.get(name)
        if v is not None and not isinstance(v, str):
            return Invalid("bad_type", f"'{name}' must be a string, got {type(v).__name__}")
        opts[name] = v
    published = None
    raw_pub = obj.get("published_at")
    if raw_pub is not None:
        try:
            published = parse_timestamp(raw_pub)
        except (ValueError, OverflowError, OSError) as exc:
            return Invalid("bad_timestamp", f"'published_at' {str(raw_pub)[:40]!r}: {str(exc)[:80]}")
    tickers = _tickers(obj.get("tickers"))
    if isinstance(tickers, Invalid):
        return tickers
    extra = {k: v for k, v in obj.items() if k not in KNOWN}
    return Item(
        id=ident,
        text=text,
        published_ms=published,
        tickers=tickers,
        extra=extra,
        raw_published=raw_pub,
        **opts,
    )


def event_time_ms(item: Item, kafka_ts_ms: int | None, now_ms: int, max_future_ms: int = 300_000) -> tuple[int, str]:
    """The time an item counts at in windows, and where it came from.

    A publication time far in the future is a clock or data error: fall back
    to the Kafka timestamp rather than opening a window nobody will close.
    """
    if item.published_ms is not None:
        if item.published_ms <= now_ms + max_future_ms:
            return item.published_ms, "published"
        if kafka_ts_ms:
            return kafka_ts_ms, "future_clamped"
        return now_ms, "future_clamped"
    if kafka_ts_ms:
        return kafka_ts_ms, "kafka"
    return now_ms, "now"


def dead_letter_record(
    raw: bytes | None,
    invalid: Invalid,
    *,
    topic: str,
    partition: int,
    offset: int,
    kafka_ts_ms: int | None,
    now_ms: int,
) -> dict[str, Any]:
    """The dead-letter message: the raw bytes (cut to 64 KiB so it fits any broker's limit), reason, origin."""
    data = raw or b""
    cut = data[:DEADLETTER_RAW_BYTES]
    try:
        text, enc = cut.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, enc = base64.b64encode(cut).decode("ascii"), "base64"
    return {
        "raw": text,
        "raw_encoding": enc,
        "raw_bytes": len(data),
        "raw_truncated": len(data) > len(cut),
        "error": invalid.reason,
        "detail": invalid.detail,
        "origin": {"topic": topic, "partition": partition, "offset": offset, "timestamp": kafka_ts_ms},
        "failed_at": now_ms,
    }
