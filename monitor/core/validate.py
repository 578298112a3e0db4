"""Validation of raw input messages: bytes in, an `Item` or an `Invalid` out.

The worker must never die on data, so `validate` never raises on
any input: every failure is an `Invalid` whose `reason` is one of the fixed
`REASONS` (a Prometheus label value and the dead-letter `error` code, so the
set must stay small and stable) and whose `detail` is one human line.

Decisions (DESIGN.md "Input item" leaves these open):

* `id`: a string, or an integer which becomes its decimal string (many
  producers use numeric ids; `7` and `"7"` are then the same item for
  de-duplication). Booleans, floats, objects and lists are `bad_id`, as are
  blank ids, ids over 256 characters and ids holding lone UTF-16 surrogates
  (they cannot be encoded as the UTF-8 Kafka key of the scored item).
* `text`: required; `empty_text` when nothing visible is left after trimming
  whitespace and invisible controls (a text of only NULs gives the model
  nothing to score). Any other text is valid however odd: NULs, control
  characters, emoji, mixed scripts, 10 MB under `max_bytes`. Normalisation
  cleans it and the model truncates it; it is never dropped.
* `published_at`: ISO-8601 (naive means UTC), RFC 2822 (RSS `pubDate`), or an
  epoch number (int, float or digit string) whose unit is read from its
  magnitude: below 1e11 seconds, below 1e14 milliseconds, below 1e17
  microseconds, below 1e20 nanoseconds (1e11 s and 1e14 ms are both the year
  5138, so no real date is ambiguous). Anything else, or a time before 1970
  or after 9999, is `bad_timestamp`. Far-future times are valid here;
  `event_time_ms` decides what time an item counts at.
* `tickers`: a list of strings; each is trimmed, a leading `$` dropped,
  upper-cased, kept only if it looks like a symbol (`AAPL`, `BRK.B`,
  `VOW3.DE`, `7203`), de-duplicated, at most 50 kept. A non-list or a
  non-string element is `bad_type`.
* JSON must be RFC 8259 JSON: `NaN`/`Infinity` and numbers that overflow a
  float are `not_json` (they would make the scored output invalid JSON).
  A UTF-8 byte-order mark is tolerated. Unknown fields pass through as they
  are.
"""

from __future__ import annotations

import base64
import codecs
import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

REASONS: tuple[str, ...] = (
    "empty",  # no value at all (None / zero bytes, e.g. a tombstone)
    "too_large",  # more than max_bytes
    "not_utf8",  # bytes are not UTF-8
    "not_json",  # not parseable as strict JSON
    "not_object",  # JSON, but not an object
    "too_deep",  # nested deeper than max_depth
    "missing_id",  # no id, or id null
    "bad_id",  # id of a wrong type, blank, too long or not encodable
    "missing_text",  # no text, or text null
    "empty_text",  # text with nothing visible in it
    "bad_type",  # text, an optional string field or tickers of the wrong type
    "bad_timestamp",  # published_at present but unusable
    "processing_error",  # reserved for the worker: an unexpected error after validation
    "aggregation_error",  # reserved for the worker: a trend event or key state the windows could not take
)
OPTIONAL_STR: tuple[str, ...] = ("title", "source", "url", "lang", "author")
KNOWN: frozenset[str] = frozenset({"id", "text", "published_at", "tickers", *OPTIONAL_STR})
MAX_ID_CHARS = 256
MAX_TICKERS = 50
# Dead-letter records carry at most this much of the raw message: the
# dead-letter topic must stay under broker message limits (Kafka's default is
# 1 MB) even when the input was up to max_bytes; JSON escaping can grow the
# kept bytes at most 6x ("\u0000"), base64 4/3x, both well under 1 MB.
DEADLETTER_RAW_BYTES = 64 * 1024
# Valid published times: 1970-01-01 up to the end of year 9999, in epoch ms.
MIN_TS_MS = 0
MAX_TS_MS = 253_402_300_799_999
# Epoch magnitude bounds: below the first is seconds, below the next ms, then us, then ns.
_EPOCH_UNITS = ((1e11, 1000.0), (1e14, 1.0), (1e17, 1e-3), (1e20, 1e-6))
_MAX_TS_STR = 64
# A symbol as the input contract accepts it: AAPL, BRK.B, VOW3.DE, 7203 (shared with monitor.core.entities).
TICKER_RE = re.compile(r"[A-Z0-9][A-Z0-9.\-]{0,11}")
_DIGITS = re.compile(r"\d{1,20}(?:\.\d{1,9})?")
# Something a reader can see: not whitespace, not a C0/C1 control, not a zero-width or bidi format char.
_VISIBLE = re.compile(r"[^\s\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff\ud800-\udfff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


@dataclass(frozen=True)
class Invalid:
    """Why a message was rejected: `reason` in REASONS (a metric label), `detail` one human line."""

    reason: str
    detail: str


@dataclass(frozen=True)
class Item:
    """A valid input item. `extra` holds unknown fields, passed through to the scored output."""

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
    # published_at exactly as received, so the output shows what the producer sent.
    raw_published: Any = None

    def to_dict(self) -> dict[str, Any]:
        """The item as JSON fields for the scored output.

        Unknown fields unchanged, known fields as validated (id as a string,
        tickers normalised), `published_at` as received; null optional fields
        are left out.
        """
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


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _strict_float(s: str) -> float:
    f = float(s)
    if not math.isfinite(f):
        raise ValueError(f"number {s[:20]} overflows a float")
    return f


def _too_deep(obj: Any, max_depth: int) -> bool:
    """True if containers nest deeper than max_depth (the top-level object is depth 1).

    Iterative, so it cannot hit the recursion limit itself; json.loads has
    already refused anything deeper than the interpreter's recursion limit.
    """
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def _epoch_ms(v: float) -> int:
    if not math.isfinite(v):
        raise ValueError("not a finite number")
    if v < 0:
        raise ValueError("negative epoch")
    for bound, to_ms in _EPOCH_UNITS:
        if v < bound:
            return int(v * to_ms)
    raise ValueError("epoch number too large")


def _int_epoch_ms(v: int) -> int:
    """Exact integer version of `_epoch_ms` (no float rounding of ms, us or ns epochs)."""
    if v < 0:
        raise ValueError("negative epoch")
    if v < 10**11:
        return v * 1000
    if v < 10**14:
        return v
    if v < 10**17:
        return v // 1_000
    if v < 10**20:
        return v // 1_000_000
    raise ValueError("epoch number too large")


def parse_timestamp(value: Any) -> int:
    """ISO-8601 / RFC 2822 string or epoch number -> epoch ms (see module doc). Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a timestamp")
    if isinstance(value, int):
        ms = _int_epoch_ms(value)
    elif isinstance(value, float):
        ms = _epoch_ms(value)
    elif isinstance(value, str):
        s = value.strip()
        if not s or len(s) > _MAX_TS_STR:
            raise ValueError("empty or overlong timestamp string")
        if _DIGITS.fullmatch(s):
            ms = _epoch_ms(float(s))
        else:
            if s[-1] in "Zz":
                s = s[:-1] + "+00:00"
            try:
                dt = datetime.fromisoformat(s)
            except ValueError:
                try:
                    dt = parsedate_to_datetime(value.strip())
                except (TypeError, ValueError, IndexError):
                    raise ValueError("neither ISO-8601 nor RFC 2822") from None
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            ms = int(dt.timestamp() * 1000)
    else:
        raise ValueError(f"a JSON {type(value).__name__} is not a timestamp")
    if not MIN_TS_MS <= ms <= MAX_TS_MS:
        raise ValueError("outside 1970..9999")
    return ms


def _tickers(value: Any) -> tuple[str, ...] | Invalid:
    if value is None:
        return ()
    if not isinstance(value, list):
        return Invalid("bad_type", f"'tickers' must be a list of strings, got {type(value).__name__}")
    out: list[str] = []
    for t in value:
        if not isinstance(t, str):
            return Invalid("bad_type", f"'tickers' must hold strings, found {type(t).__name__}")
        sym = t.strip().lstrip("$").upper()
        if len(out) < MAX_TICKERS and TICKER_RE.fullmatch(sym) and sym not in out:
            out.append(sym)
    return tuple(out)


def _short(value: Any, limit: int = 40) -> str:
    """A value for a detail line: repr (escapes newlines) cut to `limit` characters."""
    r = repr(value)
    return r if len(r) <= limit else r[: limit - 1] + "…"


def _decode_object(raw: bytes | None, max_bytes: int, max_depth: int) -> dict[str, Any] | Invalid:
    """The message as a JSON object, or why it is not one (size, encoding, syntax, depth, shape)."""
    if not raw:
        return Invalid("empty", "message value is empty")
    if len(raw) > max_bytes:
        return Invalid("too_large", f"message is {len(raw)} bytes, limit {max_bytes}")
    try:
        s = bytes(raw).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return Invalid("not_utf8", f"invalid UTF-8 at byte {exc.start}")
    try:
        obj = json.loads(s, parse_constant=_reject_constant, parse_float=_strict_float)
    except RecursionError:
        return Invalid("too_deep", f"JSON nested deeper than {max_depth}")
    except ValueError as exc:  # JSONDecodeError, and our hooks, and over-long integers
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return Invalid("not_json", f"not JSON: {msg[:120]}")
    if isinstance(obj, dict | list) and _too_deep(obj, max_depth):
        return Invalid("too_deep", f"JSON nested deeper than {max_depth}")
    if not isinstance(obj, dict):
        return Invalid("not_object", f"JSON {type(obj).__name__} where an object was expected")

    return obj


def _item_id(ident: Any) -> str | Invalid:
    """The item's id as a string usable as a Kafka key, or why it is not one."""
    if ident is None:
        return Invalid("missing_id", "field 'id' is required")
    if isinstance(ident, bool) or not isinstance(ident, str | int):
        return Invalid("bad_id", f"'id' must be a string or integer, got {type(ident).__name__}")
    ident = str(ident)
    if not ident.strip() or len(ident) > MAX_ID_CHARS:
        return Invalid("bad_id", f"'id' must be 1..{MAX_ID_CHARS} characters, not blank (got {len(ident)})")
    if _SURROGATE.search(ident):
        return Invalid("bad_id", "'id' holds a lone UTF-16 surrogate and cannot be a UTF-8 key")
    return ident


def validate(
    raw: bytes | None,
    *,
    kafka_ts_ms: int | None = None,
    max_bytes: int = 1_000_000,
    max_depth: int = 32,
    now_ms: int,
) -> Item | Invalid:
    """Check one raw message against the input contract (DESIGN.md, "Input item").

    Never raises. `kafka_ts_ms` and `now_ms` are part of the contract so a
    rule that needs time can use them without reading a clock; today the
    event time is chosen afterwards by `event_time_ms`.
    """
    del kafka_ts_ms, now_ms  # see docstring
    obj = _decode_object(raw, max_bytes, max_depth)
    if isinstance(obj, Invalid):
        return obj
    ident = _item_id(obj.get("id"))
    if isinstance(ident, Invalid):
        return ident

    text = obj.get("text")
    if text is None:
        return Invalid("missing_text", "field 'text' is required")
    if not isinstance(text, str):
        return Invalid("bad_type", f"'text' must be a string, got {type(text).__name__}")
    if not _VISIBLE.search(text):
        return Invalid("empty_text", f"'text' has nothing visible after trimming ({len(text)} characters)")

    opts: dict[str, str | None] = {}
    for name in OPTIONAL_STR:
        v = obj.get(name)
        if v is not None and not isinstance(v, str):
            return Invalid("bad_type", f"'{name}' must be a string or null, got {type(v).__name__}")
        opts[name] = v

    raw_pub = obj.get("published_at")
    published: int | None = None
    if raw_pub is not None:
        try:
            published = parse_timestamp(raw_pub)
        except (ValueError, OverflowError, OSError) as exc:
            return Invalid("bad_timestamp", f"'published_at' {_short(raw_pub)}: {str(exc)[:80]}")

    tickers = _tickers(obj.get("tickers"))
    if isinstance(tickers, Invalid):
        return tickers
    return Item(
        id=ident,
        text=text,
        published_ms=published,
        tickers=tickers,
        extra={k: v for k, v in obj.items() if k not in KNOWN},
        raw_published=raw_pub,
        **opts,
    )


def event_time_ms(item: Item, kafka_ts_ms: int | None, now_ms: int, max_future_ms: int = 300_000) -> tuple[int, str]:
    """The time an item counts at in windows, and where that time came from.

    In order: the publication time (`published`); else the Kafka record
    timestamp (`kafka`); else `now`. A time more than `max_future_ms` ahead
    of `now_ms` is a clock or data error: it would open a window nobody
    closes for a long time, so the next source is used and the source reads
    `future_clamped`. Ancient times are kept: the window code counts such an
    item as late (counted, not lost). Kafka timestamps <= 0 mean "none".
    """
    limit = now_ms + max_future_ms
    clamped = False
    if item.published_ms is not None:
        if item.published_ms <= limit:
            return item.published_ms, "published"
        clamped = True
    if kafka_ts_ms is not None and kafka_ts_ms > 0:
        if kafka_ts_ms <= limit:
            return kafka_ts_ms, "future_clamped" if clamped else "kafka"
        clamped = True
    return now_ms, "future_clamped" if clamped else "now"


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
    """The dead-letter message (JSON-able): raw bytes, reason, detail and origin.

    `raw` is UTF-8 text when the kept bytes decode, else base64. Only the
    first 64 KiB are kept (`raw_truncated`), so a 1 MB message rejected as
    too large cannot itself exceed the broker's message limit on the
    dead-letter topic; `raw_bytes` is always the full original length.
    A cut falling inside a multi-byte character ends before it, so valid
    UTF-8 stays text.
    """
    data = bytes(raw or b"")
    cut = data[:DEADLETTER_RAW_BYTES]
    truncated = len(data) > len(cut)
    try:
        # final=False: an incomplete character at a truncation point is left out, not an error.
        text = codecs.getincrementaldecoder("utf-8")().decode(cut, final=not truncated)
        enc = "utf-8"
    except UnicodeDecodeError:
        text, enc = base64.b64encode(cut).decode("ascii"), "base64"
    return {
        "raw": text,
        "raw_encoding": enc,
        "raw_bytes": len(data),
        "raw_truncated": truncated,
        "error": invalid.reason,
        "detail": invalid.detail,
        "origin": {"topic": topic, "partition": partition, "offset": offset, "timestamp": kafka_ts_ms},
        "failed_at": now_ms,
    }
