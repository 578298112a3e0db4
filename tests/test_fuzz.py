"""Property tests: the validator and the entity extractor never raise, whatever the input."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.entities import default_watchlist, extract_entities
from monitor.validate import REASONS, Invalid, Item, validate

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=20,
)
items = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(max_size=20), st.integers(), json_values),
        "text": st.one_of(st.text(), json_values),
        "published_at": st.one_of(st.integers(), st.text(max_size=30), st.floats(), json_values),
        "tickers": st.one_of(st.lists(st.text(max_size=8), max_size=5), json_values),
        "title": st.one_of(st.text(max_size=20), json_values),
    },
)


def check(res: Item | Invalid) -> None:
    if isinstance(res, Invalid):
        assert res.reason in REASONS
    else:
        assert res.text.strip() and res.id.strip()
        json.dumps(res.to_dict())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_validate_arbitrary_bytes(raw: bytes) -> None:
    check(validate(raw, now_ms=0))


@settings(max_examples=300, deadline=None)
@given(items)
def test_validate_generated_items(obj: dict) -> None:
    check(validate(json.dumps(obj).encode(), now_ms=0))


@settings(max_examples=300, deadline=None)
@given(st.text(), st.lists(st.text(max_size=10), max_size=5))
def test_extract_entities_total(text: str, tickers: list[str]) -> None:
    out = extract_entities(text, tickers, default_watchlist(), max_entities=20)
    assert len(out) <= 20 and len(set(out)) == len(out)
    assert all(e == e.upper() for e in out)
