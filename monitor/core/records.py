"""Output records (scored items, trend events, trend windows) as plain dicts.

Pure functions: the Faust agents only call these and send the result, so
the exact fields other systems consume are tested without Kafka.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from monitor.core.scores import TaskScore, sentiment_score
from monitor.core.surge import TrendStats
from monitor.core.windows import ClosedWindow

EVIDENCE_TEXT_CHARS = 280
RESERVED = ("topic", "sentiment", "entities", "model", "stream", "event_time", "event_time_source", "scored_at",
            "lag_ms", "input_fields", "lang_source")  # fmt: skip


def scored_record(
    item: Mapping[str, Any],
    scores: Mapping[str, TaskScore],
    entities: Sequence[str],
    model: Mapping[str, str],
    *,
    event_ms: int,
    event_time_source: str,
    scored_at_ms: int,
    stream: str,
    lang: str = "en",
    lang_source: str = "script",
) -> dict[str, Any]:
    """The input item (unknown fields included) plus language, topic, sentiment, entities, model and timing.

    An input field whose name the output uses (say a producer's own "sentiment")
    is kept under "input_fields" instead of being silently overwritten; so is a
    producer's `lang` spelled otherwise than the code it resolved to ("zh-CN").
    """
    out = dict(item)
    clashes = {k: out.pop(k) for k in RESERVED if k in out}
    if "lang" in out and out["lang"] != lang:
        clashes["lang"] = out.pop("lang")
    if clashes:
        out["input_fields"] = clashes
    if "topic" in scores:
        t = scores["topic"]
        out["topic"] = {"label": t.label, "confidence": round(t.confidence, 5), "probs": t.probs}
    if "sentiment" in scores:
        s = scores["sentiment"]
        out["sentiment"] = {
            "label": s.label,
            "confidence": round(s.confidence, 5),
            "score": round(sentiment_score(s.probs), 5),
            "probs": s.probs,
        }
    out["lang"] = lang
    out["lang_source"] = lang_source
    out["entities"] = list(entities)
    out["model"] = dict(model)
    out["stream"] = stream
    out["event_time"] = event_ms
    out["event_time_source"] = event_time_source
    out["scored_at"] = scored_at_ms
    out["lag_ms"] = max(0, scored_at_ms - event_ms)
    return out


def trend_keys(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(dimension, key) pairs an item counts towards: all, its topic, each entity."""
    keys = [("all", "all")]
    topic = record.get("topic")
    if isinstance(topic, Mapping) and topic.get("label"):
        keys.append(("topic", str(topic["label"])))
    keys.extend(("entity", str(e)) for e in record.get("entities", ()))
    return keys


def trend_event(record: Mapping[str, Any], dimension: str, key: str) -> dict[str, Any]:
    """The small message re-keyed to `dimension:key` for the window aggregation."""
    sent = record.get("sentiment") or {}
    return {
        "dimension": dimension,
        "key": key,
        "event_ms": int(record["event_time"]),
        "id": str(record["id"]),
        "sentiment": sent.get("label", "neutral"),
        "score": float(sent.get("score", 0.0)),
        "evidence": {
            "id": str(record["id"]),
            "text": str(record.get("text", ""))[:EVIDENCE_TEXT_CHARS],
            "title": record.get("title"),
            "source": record.get("source"),
            "url": record.get("url"),
            "score": float(sent.get("score", 0.0)),
            # Topic and all-items windows count negatives per entity (monitor/core/windows.py) so a surge
            # there can name the company that drives it; an entity key needs no list of itself.
            **({"entities": [str(e) for e in record.get("entities", ())]} if dimension != "entity" else {}),
        },
    }


def key_of(dimension: str, key: str) -> str:
    return f"{dimension}:{key}"


def trend_record(window: ClosedWindow, dimension: str, key: str, stats: TrendStats) -> dict[str, Any]:
    """One closed window of one key on the trends topic: counts, shares and the baseline it was judged by.

    Rounded as the alert record is (shares 6 places, z-score 4), so a trend and the alert it raised
    show the same numbers; the evidence stays with the alerts.
    """
    body = window.to_dict()
    body.pop("evidence", None)
    body.update(dimension=dimension, key=key, baseline_mean=round(stats.baseline_mean, 6),
                baseline_std=round(stats.baseline_std, 6), zscore=round(stats.zscore, 4))  # fmt: skip
    return body
