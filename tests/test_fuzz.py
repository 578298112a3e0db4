"""Property tests: the validator, the entity extractor, windows and the surge rule never break.

The validator and extractor see arbitrary bytes, generated JSON items and
mutated valid messages; windows and surge see random event streams and
must keep their bookkeeping invariants.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.core.entities import TICKER_RE, default_watchlist, extract_entities
from monitor.core.surge import SurgeConfig, evaluate
from monitor.core.validate import REASONS, Invalid, Item, dead_letter_record, event_time_ms, validate
from monitor.core.windows import WindowConfig, add_event, close_due

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Stream-shaped examples are costlier to generate; fewer still cover the bookkeeping well.
STREAMS = settings(FAST, max_examples=150)
NOW = 1_795_000_000_000
WL = default_watchlist()

# No subnormal floats: a test earlier in this process that opens an onnxruntime session on the main
# thread leaves it flushing denormals to zero (monitor.model.session.session_options), and hypothesis
# refuses to generate subnormals then. The worker keeps its event-loop thread IEEE (model_service.py).
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=False)
    | st.text(),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=20,
)
items = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(max_size=20), st.integers(), json_values),
        "text": st.one_of(st.text(), json_values),
        "published_at": st.one_of(st.integers(), st.text(max_size=30), st.floats(allow_subnormal=False), json_values),
        "tickers": st.one_of(st.lists(st.text(max_size=8), max_size=5), json_values),
        "title": st.one_of(st.text(max_size=20), json_values),
        "source": st.one_of(st.text(max_size=20), json_values),
        "extra": json_values,
    },
)
# Valid messages with bytes changed, inserted or removed: the near misses a parser meets in practice.
BASE = json.dumps({"id": "x1", "text": "Apple $AAPL falls 5% 📉", "tickers": ["aapl"],
                   "published_at": "2026-11-22T10:00:00Z", "extra": [1, {"a": None}]}).encode()  # fmt: skip
mutations = st.lists(
    st.tuples(st.sampled_from(["set", "insert", "delete"]), st.integers(0, len(BASE)), st.integers(0, 255)),
    min_size=1,
    max_size=6,
)


def check(res: Item | Invalid, raw: bytes | None) -> None:
    if isinstance(res, Invalid):
        assert res.reason in REASONS and res.detail and "\n" not in res.detail
        rec = dead_letter_record(raw, res, topic="t", partition=0, offset=0, kafka_ts_ms=None, now_ms=NOW)
        json.dumps(rec, allow_nan=False)
    else:
        assert res.text.strip() and res.id.strip() and len(res.id) <= 256
        assert all(TICKER_RE.fullmatch(t) for t in res.tickers) and len(res.tickers) <= 50
        json.dumps(res.to_dict(), allow_nan=False)
        t, source = event_time_ms(res, None, NOW)
        assert t <= NOW + 300_000 and source in ("published", "now", "future_clamped")


@FAST
@given(st.binary(max_size=300))
def test_validate_arbitrary_bytes(raw: bytes) -> None:
    check(validate(raw, kafka_ts_ms=None, now_ms=NOW), raw)


@FAST
@given(items)
def test_validate_generated_items(obj: dict) -> None:
    raw = json.dumps(obj).encode()
    check(validate(raw, kafka_ts_ms=NOW, now_ms=NOW), raw)


@FAST
@given(mutations)
def test_validate_mutated_messages(ops: list[tuple[str, int, int]]) -> None:
    raw = bytearray(BASE)
    for op, pos, byte in ops:
        pos = min(pos, len(raw))
        if op == "insert":
            raw.insert(pos, byte)
        elif raw and op == "set":
            raw[min(pos, len(raw) - 1)] = byte
        elif raw:
            del raw[min(pos, len(raw) - 1)]
    check(validate(bytes(raw), kafka_ts_ms=None, now_ms=NOW, max_bytes=400), bytes(raw))


@FAST
@given(st.lists(st.sampled_from(["[", "{", '"a":', "]", "}", "1", ",", '"', "\\", " "]), max_size=200))
def test_validate_bracket_soup(parts: list[str]) -> None:
    raw = ('{"id":"a","text":"t","x":' + "".join(parts) + "}").encode()
    check(validate(raw, kafka_ts_ms=None, now_ms=NOW, max_depth=8), raw)


ALIASES = sorted({a for c in WL.companies for a in (c.name, *c.aliases, *c.exact, c.ticker)})
entity_text = st.lists(
    st.one_of(
        st.sampled_from(ALIASES),
        st.sampled_from(ALIASES).map(str.lower),
        st.sampled_from(ALIASES).map(lambda a: f"${a}"),
        st.text(max_size=12),
        st.sampled_from([" ", "'s ", "-", ".", "$", "股", "é", "\x00", "$5", "US$"]),
    ),
    max_size=40,
).map("".join)


@FAST
@given(
    st.one_of(st.text(), entity_text), st.lists(st.one_of(st.text(max_size=10), st.sampled_from(ALIASES)), max_size=8)
)
def test_extract_entities_total(text: str, tickers: list[str]) -> None:
    out = extract_entities(text, tickers, WL, max_entities=20)
    assert len(out) <= 20 and len(set(out)) == len(out)
    assert all(e == e.upper() and TICKER_RE.fullmatch(e) for e in out)
    assert extract_entities(text, tickers, WL, max_entities=3) == out[:3]  # bounded, same order


events = st.lists(
    st.tuples(
        st.integers(0, 20_000),  # event time
        st.integers(0, 30),  # item id (small range: duplicates happen)
        st.sampled_from(["negative", "neutral", "positive", "other"]),
        st.floats(-1, 1, allow_subnormal=False),
        st.booleans(),  # tick after this event?
    ),
    max_size=80,
)


@STREAMS
@given(events)
def test_windows_never_lose_or_double_count(evs: list[tuple[int, int, str, float, bool]]) -> None:
    cfg = WindowConfig(size_ms=1000, allowed_lateness_ms=500, evidence_size=2)
    state = None
    outcomes = {"accepted": 0, "late": 0, "duplicate": 0}
    closed_counts = late_reported = 0
    last_start = None
    watermark = 0
    for t, i, s, score, tick in evs:
        state, out = add_event(state, event_ms=t, item_id=f"i{i}", sentiment=s, score=score,
                               evidence={"id": f"i{i}"}, cfg=cfg)  # fmt: skip
        outcomes[out] += 1
        if tick:
            watermark = max(watermark, t)
            state, closed = close_due(state, watermark_ms=watermark, cfg=cfg)
            for w in closed:
                assert last_start is None or w.window_start > last_start  # strictly in order per key
                last_start = w.window_start
                assert w.count == w.negative + w.neutral + w.positive > 0
                assert 0 <= w.negative_share <= 1 and -1 <= w.mean_score <= 1 and len(w.evidence) <= 2
                closed_counts += w.count
                late_reported += w.late_count
    assert sum(outcomes.values()) == len(evs)
    open_counts = sum(w["count"] for w in state["open"].values()) if state else 0
    assert closed_counts + open_counts == outcomes["accepted"]
    assert late_reported + (state["late"] if state else 0) == outcomes["late"]
    json.dumps(state)


@STREAMS
@given(st.lists(st.tuples(st.floats(0, 1, allow_subnormal=False), st.integers(1, 200)), max_size=60))
def test_surge_alerts_alternate_firing_then_resolved(windows: list[tuple[float, int]]) -> None:
    cfg = SurgeConfig(warmup_windows=2, cooldown_ms=3_000)
    state = None
    states = []
    for i, (share, count) in enumerate(windows):
        w = type("W", (), {"window_start": i * 1000, "window_end": i * 1000 + 1000, "count": count,
                           "negative_share": share, "evidence": []})  # fmt: skip
        state, stats, alert = evaluate(state, w, cfg, now_ms=0, dimension="all", key="all")
        assert stats.baseline_std >= cfg.min_std and stats.zscore == stats.zscore
        if alert:
            states.append(alert.state)
            assert alert.zscore == alert.zscore and alert.severity in ("warning", "critical")
    assert states == ["firing", "resolved"] * (len(states) // 2) + ["firing"] * (len(states) % 2)
    json.dumps(state, allow_nan=False)
