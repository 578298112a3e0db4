"""Producing rows into a Kafka topic at a paced rate, optionally with an injected surge.

Building messages is pure (`iter_messages`, `Pacer` with an injectable
clock) and tested without Kafka; `replay()` is the kafka-python edge, safe
to run in a background thread and stopped by a `threading.Event`.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from monitor.feed.rows import FeedError, Row, RowSet, Timestamps, load_rows
from monitor.feed.surges import Surge, surge_items, surge_pool
from monitor.settings import Settings
from monitor.stream.clients import ensure_topic, make_producer

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- pacing


class Clock(Protocol):
    """Time source: injectable so pacing and surge timing are tested without sleeping."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> bool:
        """Sleep; False when interrupted (stop requested)."""
        ...

    def wall_ms(self) -> int: ...


class SystemClock:
    """Real time; `sleep` returns early when `stop` is set so a replay thread stops promptly."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self.stop = stop

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> bool:
        if self.stop is not None:
            return not self.stop.wait(max(0.0, seconds))
        if seconds > 0:
            time.sleep(seconds)
        return True

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000


class Pacer:
    """Token bucket: `rate` tokens per second, at most `burst` saved up.

    A per-message sleep of 1/rate drifts slow (every sleep overshoots and
    sending takes time); the bucket credits the overshoot back, so the mean
    rate is accurate from 1 to a few thousand msg/s. The default burst is
    a quarter second of messages: enough to make up the 20-90 ms stalls
    the kafka-python sender thread causes (measured), small enough that a
    long stall (broker down) does not end in a flood. rate <= 0: no pacing.
    """

    BURST_SECONDS = 0.25

    def __init__(self, rate: float, clock: Clock, burst: float | None = None) -> None:
        self.rate = float(rate)
        self.clock = clock
        self.burst = max(1.0, burst if burst is not None else self.rate * self.BURST_SECONDS)
        self._tokens = 1.0
        self._last = clock.monotonic()

    def _refill(self) -> None:
        now = self.clock.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def wait(self) -> bool:
        """Block (via the clock) until one message may be sent and take its token; False if stopped."""
        if self.rate <= 0:
            return True
        self._refill()
        while self._tokens < 1.0:
            if not self.clock.sleep((1.0 - self._tokens) / self.rate):
                return False
            before = self._tokens
            self._refill()
            if self._tokens == before:  # a clock that does not move would spin forever
                break
        self._tokens -= 1.0
        return True


# --------------------------------------------------------------------------- messages


def base_message(row: Row, msg_id: str) -> dict[str, Any]:
    msg: dict[str, Any] = {"id": msg_id, "text": row.text}
    if row.source:
        msg["source"] = row.source
    if row.tickers:
        msg["tickers"] = list(row.tickers)
    msg.update(row.extra)
    return msg


def iter_messages(
    rows: Sequence[Row],
    *,
    rate: float = 50.0,
    timestamps: Timestamps = "now",
    surge: Surge | None = None,
    seed: int = 0,
    clock: Clock | None = None,
    loop: bool = False,
    limit: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield the input items to send, each one when it is due.

    Pacing happens here (through `clock`), so the surge window and the
    `published_at` stamps follow the real send times; with a fake clock the
    whole sequence is deterministic for a given seed. Ids are stable: the
    row id, `<id>-r<lap>` on later laps of `--loop`, and
    `surge-<key>-<n>` for injected items (n = position in the stream).
    """
    if timestamps not in ("now", "preserve"):
        raise ValueError(f"timestamps must be 'now' or 'preserve', not {timestamps!r}")
    if not rows:
        return
    clock = clock or SystemClock()
    rng = random.Random(seed)
    pool = surge_items(rows, surge) if surge else []
    if surge and not pool:
        raise ValueError(f"no negative rows to inject for the {surge.label()} surge")
    order: list[tuple[Row, str, list[str]]] = []
    pacer = Pacer(rate, clock)
    t0 = clock.monotonic()
    n = 0
    lap = 0
    while True:
        for row in rows:
            if limit is not None and n >= limit:
                return
            if not pacer.wait():
                return
            elapsed = clock.monotonic() - t0
            if surge and surge.active(elapsed) and rng.random() < surge.share:
                if not order:  # a shuffled cycle: no repeat until the pool is used up
                    order = list(pool)
                    rng.shuffle(order)
                neg, text, tickers = order.pop()
                msg = base_message(neg, f"surge-{(surge.key or 'all').lower()}-{n}")
                msg.update(text=text, injected=True, injected_from=neg.id)
                if tickers:
                    msg["tickers"] = tickers
            else:
                msg = base_message(row, row.id if lap == 0 else f"{row.id}-r{lap}")
            if timestamps == "now":
                msg["published_at"] = clock.wall_ms()
            elif row.published_at is not None:
                # An injected item takes the time of the row it replaces, so a
                # preserved timeline still has the surge where it was injected.
                msg["published_at"] = row.published_at
            yield msg
            n += 1
        lap += 1
        if not loop:
            return


def encode(msg: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """(key, value) bytes: keyed by id so a re-sent item lands on the same partition."""
    return str(msg["id"]).encode("utf-8"), json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# --------------------------------------------------------------------------- Kafka edge


@dataclass
class ReplayStats:
    sent: int = 0
    injected: int = 0
    failed: int = 0
    skipped_rows: int = 0
    seconds: float = 0.0  # wall time of the whole replay, connect and final flush included
    send_seconds: float = 0.0  # first to last send: what the pacing controls
    topic: str = ""
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Achieved send rate (messages per second between the first and the last send)."""
        return (self.sent - 1) / self.send_seconds if self.sent > 1 and self.send_seconds > 0 else 0.0

    def summary(self) -> str:
        s = (
            f"sent {self.sent} messages ({self.injected} injected) to {self.topic} "
            f"in {self.seconds:.1f} s ({self.rate:.1f} msg/s)"
        )
        if self.skipped_rows:
            s += f"; skipped {self.skipped_rows} rows without text"
        if self.failed:
            s += f"; {self.failed} failed: {self.errors[0] if self.errors else 'unknown error'}"
        return s


def _check_surge_pool(rowset: RowSet, surge: Surge, label_col: str | None) -> None:
    """A surge needs real negative rows to inject; say which are missing rather than replay without it."""
    if surge_pool(rowset.rows, surge):
        return
    if surge.kind == "entity" and any(r.negative for r in rowset.rows):
        raise FeedError(
            f"{rowset.path} has no negative rows about one company to inject the {surge.label()} surge: "
            f"none names {surge.key} alone, and none has an entity column naming the company to replace"
        )
    raise FeedError(
        f"{rowset.path} has no rows labelled negative in column '{label_col}'"
        + (f" with topic '{surge.key}'" if surge.kind == "topic" else "")
        + f" to inject the {surge.label()} surge"
    )


def replay(
    settings: Settings,
    path: str | Path | RowSet,
    topic: str,
    *,
    rate: float = 50.0,
    limit: int | None = None,
    loop: bool = False,
    timestamps: Timestamps = "now",
    surge: Surge | None = None,
    seed: int = 0,
    text_col: str = "text",
    id_col: str | None = None,
    label_col: str | None = "label",
    topic_col: str | None = "topic",
    entity_col: str | None = "entity",
    stop: threading.Event | None = None,
    progress: Callable[[ReplayStats], None] | None = None,
    create_topic: bool = True,
) -> ReplayStats:
    """Produce a file into `topic` at `rate` msg/s; returns what was sent.

    Runs until the file (or `limit`) is done, or until `stop` is set, which
    also interrupts the pacing sleep, so a demo thread stops within
    milliseconds. Send failures are counted, not raised: one bad record
    must not end a long replay. `progress` is called after every message.
    """
    rowset = path if isinstance(path, RowSet) else load_rows(
        path, text_col=text_col, id_col=id_col, label_col=label_col, topic_col=topic_col, entity_col=entity_col
    )  # fmt: skip
    if surge:
        _check_surge_pool(rowset, surge, label_col)
    if create_topic:
        ensure_topic(settings, topic)
    stats = ReplayStats(skipped_rows=rowset.skipped, topic=topic)
    lock = threading.Lock()
    late_failures = [0]  # failed after send() accepted them: counted in `sent` until the end

    def failed(exc: BaseException, late: bool = True) -> None:
        with lock:
            stats.failed += 1
            late_failures[0] += late
            if len(stats.errors) < 5:
                stats.errors.append(f"{type(exc).__name__}: {exc}")

    producer = make_producer(settings)
    clock = SystemClock(stop)
    started = time.monotonic()
    try:
        messages = iter_messages(
            rowset.rows, rate=rate, timestamps=timestamps, surge=surge, seed=seed, clock=clock, loop=loop, limit=limit
        )
        _send_all(producer, topic, messages, stats, failed, stop, progress)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=5)
        stats.seconds = time.monotonic() - started
    stats.sent -= late_failures[0]
    return stats


def _send_all(
    producer: Any,
    topic: str,
    messages: Iterable[dict[str, Any]],
    stats: ReplayStats,
    failed: Callable[..., None],
    stop: threading.Event | None,
    progress: Callable[[ReplayStats], None] | None,
) -> None:
    from kafka.errors import KafkaError

    first_send: float | None = None
    for msg in messages:
        if stop is not None and stop.is_set():
            break
        key, value = encode(msg)
        try:
            producer.send(topic, key=key, value=value).add_errback(failed)
        except KafkaError as exc:  # e.g. a record over the size limit: refused before sending
            failed(exc, late=False)
            continue
        now = time.monotonic()
        first_send = now if first_send is None else first_send
        stats.send_seconds = now - first_send
        stats.sent += 1
        stats.injected += bool(msg.get("injected"))
        if progress is not None:
            progress(stats)
