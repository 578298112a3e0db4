"""Shared fixtures for tests that talk to a real Kafka-protocol broker.

One embedded broker (tansu) serves the whole session: it starts in ~10 ms,
but each test gets its own uniquely named topics so tests never see each
other's records and need no cleanup. Nothing here is autouse: the fast
unit tests never start a process. Tests that request `broker` are
integration tests and carry `@pytest.mark.slow`.

The helpers are plain functions as well (`from tests.conftest import
settings_for, consume`) so harnesses and scripts can use them too.

Every embedded broker logs at `warn` (monitor/stream/broker.py says why);
`pytest --broker-log info` (or FINSENT_BROKER_LOG=info) turns on tansu's
span logging for every broker the session starts, to see what it did.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.settings import Settings, TopicSettings
from monitor.stream.broker import LOG_ENV, EmbeddedBroker, rust_log_filter

_seq = itertools.count()


def _bootstrap(target: EmbeddedBroker | Settings | str) -> str:
    if isinstance(target, EmbeddedBroker):
        return target.bootstrap
    if isinstance(target, Settings):
        return target.kafka.bootstrap
    return str(target)


def settings_for(broker: EmbeddedBroker | str, **overrides: Any) -> Settings:
    """Settings for the embedded broker (profile "embedded"), with nested overrides.

    `settings_for(broker, topics=topics, surge={"k": 2})`: each keyword is a
    Settings section; a dict is merged into that section's defaults.
    """
    sections: dict[str, Any] = {"kafka": {"bootstrap": _bootstrap(broker), "profile": "embedded"}}
    for name, value in overrides.items():
        if isinstance(value, dict) and isinstance(sections.get(name), dict):
            sections[name] = {**sections[name], **value}
        else:
            sections[name] = value
    return Settings(**sections)


def unique_topics(prefix: str = "t", partitions: int = 4) -> dict[str, Any]:
    """A TopicSettings-compatible dict whose names no other test uses."""
    tag = re.sub(r"[^A-Za-z0-9]+", "-", prefix).strip("-")[:40] or "t"
    suffix = f"{tag}-{os.getpid()}-{next(_seq)}"
    names = TopicSettings().model_dump()
    out: dict[str, Any] = {k: f"{v}.{suffix}" for k, v in names.items() if isinstance(v, str)}
    out["inputs"] = [f"{t}.{suffix}" for t in names["inputs"]]
    out["partitions"] = partitions
    return out


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--broker-log",
        metavar="LEVEL",
        default=None,
        help="log level of every embedded tansu broker (default warn; info logs every span: gigabytes)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # Through the environment, so brokers that tests and harnesses construct themselves get it too.
    level = config.getoption("--broker-log")
    if level:
        try:
            rust_log_filter(level)  # a bad level fails now, not in the first broker
        except ValueError as exc:
            raise pytest.UsageError(f"--broker-log: {exc}") from None
        os.environ[LOG_ENV] = level


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One tansu broker for the session, started on first use and stopped at the end."""
    log_file = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_file=log_file) as b:
        yield b


def delete_topics(target: EmbeddedBroker | Settings | str, names: list[str]) -> None:
    """Delete those of `names` that exist, ignoring failures (teardown must not mask the test's result)."""
    from kafka import KafkaAdminClient

    try:
        admin = KafkaAdminClient(bootstrap_servers=[_bootstrap(target)], request_timeout_ms=10_000)
    except Exception:
        return
    try:
        existing = set(admin.list_topics())
        if doomed := [n for n in names if n in existing]:
            admin.delete_topics(doomed)
    except Exception:
        pass
    finally:
        admin.close()


@pytest.fixture
def make_topics(broker: EmbeddedBroker, request: pytest.FixtureRequest) -> Iterator[Callable[..., dict[str, Any]]]:
    """Factory: `make_topics(partitions=4, create=True)` -> fresh topic names, created on the broker.

    Topics are created explicitly because tansu auto-creates unknown ones
    with 4 partitions, whatever the test wanted. They are deleted after the
    test: tansu answers an all-topics metadata request (every client start,
    every admin call) in time proportional to the number of topics, ~15-25 ms
    each, so a session that kept them all would slow down test by test.
    """
    made: list[str] = []  # also names not created here (create=False): the test may create them

    def make(partitions: int = 4, create: bool = True) -> dict[str, Any]:
        topics = unique_topics(request.node.name, partitions)
        names = TopicSettings(**topics).all_topics()
        made.extend(names)
        if create:
            broker.create_topics(names, partitions)
        return topics

    yield make
    if made and broker.running:
        delete_topics(broker, made)


@pytest.fixture
def topics(make_topics: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """This test's own topics (4 partitions), already created."""
    return make_topics()


def _decode(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return raw


def consume_records(
    target: EmbeddedBroker | Settings | str, topic: str, n: int | None = None, *, timeout: float = 20.0
) -> list[Any]:
    """All records of `topic` from offset 0 until `n` are read (or, with n=None, until quiet), or `timeout`.

    Values are JSON-decoded when they are JSON (raw bytes otherwise). Uses
    assign + seek_to_beginning and counts what it reads: tansu's end offsets
    are wrong (a partition's end is the last batch's base offset + 1), so
    "read up to the end" is never asked of it.
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=[_bootstrap(target)],
        group_id=None,
        enable_auto_commit=False,
        allow_auto_create_topics=False,
        fetch_max_wait_ms=200,
    )
    try:
        deadline = time.monotonic() + timeout
        parts: set[int] = set()
        while not parts and time.monotonic() < deadline:
            parts = consumer.partitions_for_topic(topic) or set()
            if not parts:
                time.sleep(0.1)
        if not parts:
            raise AssertionError(f"topic {topic} does not exist")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        quiet_since = time.monotonic()
        while time.monotonic() < deadline and (n is None or len(out) < n):
            batch = consumer.poll(timeout_ms=200)
            got = [r._replace(value=_decode(r.value)) for recs in batch.values() for r in recs]
            if got:
                out.extend(got)
                quiet_since = time.monotonic()
            elif n is None and out and time.monotonic() - quiet_since > 1.0:
                break
        return out
    finally:
        consumer.close()


def consume(
    target: EmbeddedBroker | Settings | str, topic: str, n: int | None = None, *, timeout: float = 20.0
) -> list[Any]:
    """Like `consume_records`, returning only the decoded values."""
    return [r.value for r in consume_records(target, topic, n, timeout=timeout)]


def produce(target: EmbeddedBroker | Settings | str, topic: str, values: list[Any], *, key: str | None = "id") -> None:
    """Send JSON values (bytes as they are), keyed by `value[key]` when present; waits for delivery."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=[_bootstrap(target)], enable_idempotence=False, acks=1, linger_ms=5)
    try:
        for v in values:
            raw = v if isinstance(v, bytes) else json.dumps(v).encode()
            k = str(v[key]).encode() if key and isinstance(v, dict) and key in v else None
            producer.send(topic, key=k, value=raw)
        producer.flush(timeout=30)
    finally:
        producer.close()


@pytest.fixture
def demo_csv() -> Path:
    """The shipped demo headlines (real finance tweets, labelled)."""
    return Path(__file__).resolve().parent.parent / "monitor" / "data" / "demo" / "headlines.csv"


# --------------------------------------------------------------------------- waiting on conditions


def wait_until(
    condition: Callable[[], Any], timeout: float, what: str | Callable[[], str], interval: float = 0.2
) -> Any:
    """Poll `condition()` until it returns something truthy and return that; after `timeout` s fail naming `what`.

    `what` is what the test was waiting for; a callable is called only on failure, so it can add the
    last value seen or a worker's log tail.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what() if callable(what) else what}")
        time.sleep(interval)


def wait_for_metric(
    worker: Any,
    name: str,
    at_least: float,
    labels: dict[str, str] | None = None,
    *,
    timeout: float = 60.0,
    what: str = "",
) -> float:
    """Poll a `monitor.testing.WorkerProcess`'s /metrics until `name` (summed over the matching series) is at least
    `at_least`; return its value. Fails at once if the worker exits, else after `timeout` s with the last value
    and the worker's log tail."""
    last = [0.0]

    def reached() -> bool:
        if worker.proc is not None and worker.proc.poll() is not None:
            raise AssertionError(
                f"worker exited ({worker.proc.returncode}) while waiting for {what or name}\n{worker.log_tail()}"
            )
        last[0] = worker.metric(name, labels)
        return last[0] >= at_least

    series = f"{name}{labels or ''}"
    wait_until(
        reached, timeout, lambda: f"{what or series}: {series} >= {at_least:g}, last {last[0]:g}\n{worker.log_tail()}"
    )
    return last[0]


def wait_for_values(
    reader: Any, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float, what: str | Callable[[], str]
) -> list[dict[str, Any]]:
    """`monitor.testing.TopicReader.wait_for` that fails, naming `what`, when `predicate` never held."""
    values = reader.wait_for(predicate, timeout=timeout)
    if not predicate(values):
        detail = what() if callable(what) else what
        raise AssertionError(f"timed out after {timeout:g} s waiting for {detail} ({len(values)} records read)")
    return values
