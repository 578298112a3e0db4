"""The Kafka contract as JSON Schema (docs/schemas/*.schema.json, described in docs/SCHEMAS.md), for tests.

The schema files live in the repository, not in the installed package, so
this module works only from a source checkout: `load_schema` reads
`docs/schemas/<kind>.schema.json` relative to the repository root. The test
suite uses it to check the records it builds and every record a
`monitor.testing.TopicReader` reads back from a worker's output topics.
`jsonschema` (the dev extra) is imported on first use, so importing this
module costs nothing where it is not installed.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SCHEMA_DIR = REPO / "docs" / "schemas"
KINDS: tuple[str, ...] = ("input", "scored", "trend", "alert", "deadletter")

# Output topics: the default names (monitor/settings.py TopicSettings) and the
# per-test names of monitor.testing.TopicNames ("<prefix><suffix>").
_DEFAULT_TOPICS = {
    "finsent.scored": "scored",
    "finsent.trends": "trend",
    "finsent.alerts": "alert",
    "finsent.deadletter": "deadletter",
}
_TEST_PREFIXES = (("scored-", "scored"), ("trends-", "trend"), ("alerts-", "alert"), ("dead-", "deadletter"))


class RecordInvalid(AssertionError, ValueError):
    """A record that does not match its schema; the message names the field path(s).

    Both an AssertionError (a test reading it fails as an assertion) and a ValueError.
    """


def schema_path(kind: str) -> Path:
    if kind not in KINDS:
        raise ValueError(f"unknown schema kind {kind!r}; one of {', '.join(KINDS)}")
    return SCHEMA_DIR / f"{kind}.schema.json"


@cache
def load_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of `kind` (input, scored, trend, alert, deadletter) from docs/schemas/.

    Only from a source checkout: the files are not installed with the package.
    The result is cached; do not modify it.
    """
    path = schema_path(kind)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: schemas are read from a source checkout only") from None
    schema: dict[str, Any] = json.loads(text)
    return schema


def kind_of_topic(name: str) -> str | None:
    """The schema kind of an output topic name, or None for input, internal and unknown topics.

    Knows the default names (finsent.scored, finsent.trends, finsent.alerts,
    finsent.deadletter) and the test names of monitor.testing.TopicNames
    (scored-*, trends-*, alerts-*, dead-*).
    """
    if name in _DEFAULT_TOPICS:
        return _DEFAULT_TOPICS[name]
    for prefix, kind in _TEST_PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            return kind
    return None


@cache
def validator(kind: str) -> Any:
    """A compiled draft 2020-12 validator for `kind`, built once per process."""
    from jsonschema import Draft202012Validator

    schema = load_schema(kind)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _path(error: Any) -> str:
    """`$.a.b[0]` for an error; a missing required field is named as its own path."""
    parts = list(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        # jsonschema reports each missing field as its own error, "'<name>' is a required property".
        missing = [f for f in error.validator_value if f not in error.instance and error.message.startswith(repr(f))]
        if missing:
            parts.append(missing[0])
    out = "$"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def _cut(message: str, limit: int = 240) -> str:
    """jsonschema messages quote the offending value, which may be a whole text."""
    return message if len(message) <= limit else message[: limit - 1] + "…"


def errors(kind: str, value: Any) -> list[str]:
    """Every way `value` breaks the `kind` schema, as "<field path>: <message>" lines (empty when valid)."""
    return sorted(f"{_path(e)}: {_cut(e.message)}" for e in validator(kind).iter_errors(value))


def validate_record(kind: str, value: Any, where: str | None = None) -> None:
    """Raise RecordInvalid naming each field path that breaks the `kind` schema; `where` says which record."""
    problems = errors(kind, value)
    if problems:
        head = f"{kind} record{f' {where}' if where else ''} does not match docs/schemas/{kind}.schema.json"
        shown = problems[:10] + ([f"... and {len(problems) - 10} more"] if len(problems) > 10 else [])
        raise RecordInvalid(head + ":\n  " + "\n  ".join(shown))
