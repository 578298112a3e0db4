"""Prometheus metrics of the worker (names are the contract in DESIGN.md).

Every metric lives in one `CollectorRegistry` per worker so tests and
several workers in one process never collide. Label values for entities
are bounded: only watchlist companies (or the first `max_entities` seen)
get a series of their own, everything else is folded into "other".

Per-key gauges and the consumer lag are exported only by the worker that
owns the partition they describe: a rebalance drops the series of the
partitions that moved away (monitor/stream/aggregation.py).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
OTHER = "other"


class Metrics:
    def __init__(
        self, registry: CollectorRegistry | None = None, entity_allowed: Callable[[str], bool] | None = None
    ) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self._items(r)
        self._trends(r)
        self._health(r)
        self._entity_allowed = entity_allowed or (lambda _k: False)
        self._entities_seen: set[str] = set()
        self._max_entities = 50
        self._lock = threading.Lock()
        self._model_labels: tuple[str, str, str] | None = None

    def _items(self, r: CollectorRegistry) -> None:
        """What happens to input items: scored, dead-lettered, how fast."""
        self.messages = Counter(
            "finsent_messages", "Items scored, by input stream, topic, sentiment and language",
            ["stream", "topic", "sentiment", "lang"],
            registry=r,
        )  # fmt: skip
        self.invalid = Counter(
            "finsent_invalid_messages", "Messages sent to the dead-letter topic, by reason", ["reason"], registry=r
        )
        self.deadletter = Counter(
            "finsent_deadletter", "Dead-letter records written, by reason", ["reason"], registry=r
        )
        self.scoring_seconds = Histogram(
            "finsent_scoring_seconds", "Model time per micro-batch (tokenise + ONNX)", buckets=LATENCY_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "finsent_batch_size", "Items per scoring micro-batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.lag = Histogram(
            "finsent_end_to_end_lag_seconds", "Kafka timestamp of the input to scored item written",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip

    def _trends(self, r: CollectorRegistry) -> None:
        """Each key's last closed window and its surge state (labels bounded by the entity policy)."""
        dk = ["dimension", "key"]
        self.negative_share = Gauge(
            "finsent_negative_share", "Negative share of the last closed window", dk, registry=r
        )
        self.sentiment_mean = Gauge(
            "finsent_sentiment_mean", "Mean sentiment score of the last closed window", dk, registry=r
        )
        self.zscore = Gauge(
            "finsent_surge_zscore", "Z-score of the last window's negative share vs baseline", dk, registry=r
        )
        self.window_count = Gauge("finsent_window_count", "Items in the last closed window", dk, registry=r)
        self.window_end = Gauge(
            "finsent_window_end_timestamp_seconds", "End of the last closed window (unix time)", dk, registry=r
        )
        self.baseline = Gauge("finsent_baseline_negative_share", "EW baseline of the negative share", dk, registry=r)
        self.surge_active = Gauge(
            "finsent_surge_active", "1 while the in-stream surge rule fires", [*dk, "severity"], registry=r
        )
        # 1 while a firing surge belongs to one company's incident: an entity surge's own ticker, or the
        # ticker a topic/all surge is derived from. Alertmanager inhibits derived pages on `incident`.
        self.surge_incident = Gauge(
            "finsent_surge_incident", "1 while a firing surge belongs to this company's incident", [*dk, "incident"],
            registry=r,
        )  # fmt: skip
        self.alerts = Counter("finsent_alerts", "Surge alerts fired", ["dimension", "severity"], registry=r)

    def _health(self, r: CollectorRegistry) -> None:
        """The model in service, consumer lag, delivery and aggregation trouble, the event loop."""
        self.model_info = Gauge(
            "finsent_model_info", "Model bundle in service", ["name", "version", "sha256"], registry=r
        )
        self.model_loaded = Gauge("finsent_model_loaded", "1 when a model bundle is in service", registry=r)
        self.model_reloads = Counter("finsent_model_reloads", "Bundle swap attempts", ["result"], registry=r)
        self.consumer_lag = Gauge(
            "finsent_consumer_lag", "Messages behind the end of the partition", ["topic", "partition"], registry=r
        )
        self.last_scored = Gauge(
            "finsent_last_scored_timestamp_seconds", "Unix time of the last scored item", registry=r
        )
        self.late_items = Counter(
            "finsent_late_items", "Items too late for their window (counted, not windowed)", ["dimension"], registry=r
        )
        self.duplicates = Counter(
            "finsent_duplicate_items", "Redelivered items not counted twice in a window", registry=r
        )
        self.send_retries = Counter(
            "finsent_send_retries", "Output records re-sent after a failed delivery", registry=r
        )
        self.send_failures = Counter(
            "finsent_send_failures", "Units whose output could not be delivered after retries", registry=r
        )
        self.fetch_restarts = Counter(
            "finsent_fetch_restarts",
            "Input partitions fetched afresh after their fetching stalled with records waiting",
            ["topic"],
            registry=r,
        )
        self.aggregation_failures = Counter(
            "finsent_aggregation_failures",
            "Aggregation steps that raised, by step (event, close, tick); retried, then dead-lettered",
            ["step"],
            registry=r,
        )
        self.loop_tasks = Gauge(
            "finsent_event_loop_tasks", "asyncio tasks alive in the worker (a leak shows as growth)", registry=r
        )

    def set_entity_policy(self, allowed: Callable[[str], bool], max_entities: int) -> None:
        self._entity_allowed = allowed
        self._max_entities = max_entities

    def key_label(self, dimension: str, key: str) -> str:
        """Bounded label value: watchlist entities always, others while under the cap, then 'other'."""
        if dimension != "entity":
            return key
        if self._entity_allowed(key):
            return key
        with self._lock:
            if key in self._entities_seen:
                return key
            if len(self._entities_seen) < self._max_entities:
                self._entities_seen.add(key)
                return key
        return OTHER

    def incident_label(self, dimension: str, key_label: str, derived_from: str | None) -> str | None:
        """The `incident` label of a surge (a bounded entity label), or None when it belongs to none.

        An entity folded into "other" names no incident: "other" would tie
        unrelated companies' surges together.
        """
        if dimension == "entity":
            return key_label if key_label != OTHER else None
        if derived_from and derived_from.startswith("entity:"):
            ticker = self.key_label("entity", derived_from.partition(":")[2])
            return ticker if ticker != OTHER else None
        return None

    def clear_incident(self, dimension: str, key_label: str, incident: str) -> None:
        """Drop the series of a resolved surge (a 0 would leave one series per past incident)."""
        # KeyError: no such series (a restart forgot it, or the label was never set): nothing to drop.
        with contextlib.suppress(KeyError):
            self.surge_incident.remove(dimension, key_label, incident)

    def drop_key_series(self, dimension: str, key_label: str) -> None:
        """Drop every per-key series of one (dimension, key label): its partition moved to another worker."""
        for gauge in (self.negative_share, self.sentiment_mean, self.window_count, self.zscore, self.baseline,
                      self.window_end):  # fmt: skip
            with contextlib.suppress(KeyError):  # never set here
                gauge.remove(dimension, key_label)
        for gauge, extra in ((self.surge_active, "severity"), (self.surge_incident, "incident")):
            for value in _label_values(gauge, extra, dimension=dimension, key=key_label):
                with contextlib.suppress(KeyError):
                    gauge.remove(dimension, key_label, value)

    def keep_lag(self, assigned: Iterable[tuple[str, int]]) -> None:
        """Keep the consumer lag of the (topic, partition) pairs assigned now: a moved partition's lag is stale."""
        keep = {(topic, str(partition)) for topic, partition in assigned}
        for topic in _label_values(self.consumer_lag, "topic"):
            for partition in _label_values(self.consumer_lag, "partition", topic=topic):
                if (topic, partition) not in keep:
                    with contextlib.suppress(KeyError):
                        self.consumer_lag.remove(topic, partition)

    def set_model(self, name: str, version: str, sha256: str) -> None:
        labels = (name, version, sha256)
        if self._model_labels and self._model_labels != labels:
            self.model_info.remove(*self._model_labels)
        self._model_labels = labels
        self.model_info.labels(*labels).set(1)
        self.model_loaded.set(1)


def _label_values(gauge: Gauge, name: str, **match: str) -> set[str]:
    """Values of label `name` among the gauge's series whose other labels match (public API: `collect`)."""
    return {
        sample.labels[name]
        for family in gauge.collect()
        for sample in family.samples
        if all(sample.labels.get(k) == v for k, v in match.items())
    }


class SeriesOwners:
    """Which (dimension, key label) series each trend-events partition published.

    Labels are bounded (`Metrics.key_label`), so keys of several partitions
    can share one series ("other"): a series goes only when no partition
    still owned published it.
    """

    def __init__(self) -> None:
        self._by_partition: dict[int, set[tuple[str, str]]] = {}

    def note(self, partition: int, series: tuple[str, str]) -> None:
        self._by_partition.setdefault(partition, set()).add(series)

    def partitions(self) -> set[int]:
        return set(self._by_partition)

    def release(self, partitions: Iterable[int]) -> set[tuple[str, str]]:
        """Forget the partitions; the series that no remaining partition published, to drop."""
        gone: set[tuple[str, str]] = set()
        for p in set(partitions):
            gone |= self._by_partition.pop(p, set())
        still = set().union(*self._by_partition.values())
        return gone - still
