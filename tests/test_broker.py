"""The embedded broker: start, readiness, topics, produce/consume, clean stop, port conflicts, log volume.

tansu panics yet exits 0 when its port is taken; these tests pin down that
`EmbeddedBroker` turns that into a `BrokerError` with a clear message
instead of a "ready" broker that is not there. At `info` tansu logs every
tracing span (gigabytes in a few minutes of traffic), so the default level
must stay quiet; the log tests below fail if it does not.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from monitor.stream.broker import (
    LOG_ENV,
    BrokerError,
    EmbeddedBroker,
    free_port,
    resolve_log_level,
    rust_log_filter,
)
from monitor.stream.clients import create_topics
from tests.conftest import consume, consume_records, produce

slow = pytest.mark.slow


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone once /proc says so or it is reaped.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@slow
def test_start_create_produce_consume_stop() -> None:
    b = EmbeddedBroker()
    b.start()
    try:
        assert b.running and _port_open(b.port)
        pid = b._proc.pid if b._proc else -1
        b.create_topics(["bt.one"], partitions=3)
        produce(b, "bt.one", [{"id": str(i), "text": f"item {i}"} for i in range(30)])
        records = consume_records(b, "bt.one", 30, timeout=15)
        assert sorted(int(r.value["id"]) for r in records) == list(range(30))
        assert {r.partition for r in records} <= {0, 1, 2}
        # Keyed records of one key stay on one partition.
        by_key: dict[bytes, set[int]] = {}
        for r in records:
            by_key.setdefault(r.key, set()).add(r.partition)
        assert all(len(p) == 1 for p in by_key.values())
    finally:
        b.stop()
    assert not b.running
    assert not _pid_alive(pid), "tansu process still alive after stop()"
    assert not _port_open(b.port)
    b.stop()  # idempotent


@slow
def test_context_manager_restarts_on_a_new_port() -> None:
    with EmbeddedBroker() as b:
        first = b.port
        assert b.running
    assert not b.running
    with EmbeddedBroker() as b2:
        assert b2.port != first or not _port_open(first)
        assert b2.running


@slow
def test_port_in_use_by_a_listener_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(BrokerError, match=r"port \d+ .*already in use"):
            EmbeddedBroker(port=port).start(timeout=10)


@slow
def test_port_bound_but_not_listening_is_detected_not_reported_ready() -> None:
    # Passes the connect() pre-check; tansu then panics (and exits 0) on bind.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        b = EmbeddedBroker(port=port)
        with pytest.raises(BrokerError, match=r"(?i)in use"):
            b.start(timeout=10)
        assert not b.running


@slow
def test_create_topics_is_idempotent(broker: EmbeddedBroker, topics: dict[str, Any]) -> None:
    name = topics["scored"]
    assert create_topics(broker.bootstrap, [name], 4) == []  # already made by the fixture
    fresh = f"{name}.extra"
    assert create_topics(broker.bootstrap, [fresh, fresh], 2) == [fresh]
    from kafka import KafkaConsumer

    c = KafkaConsumer(bootstrap_servers=[broker.bootstrap], allow_auto_create_topics=False)
    try:
        assert c.partitions_for_topic(fresh) == {0, 1}
        assert c.partitions_for_topic(name) == {0, 1, 2, 3}
    finally:
        c.close()


@slow
def test_fixture_topics_are_isolated(broker: EmbeddedBroker, make_topics: Callable[..., dict[str, Any]]) -> None:
    a, b = make_topics(), make_topics(partitions=1)
    assert set(a["inputs"]).isdisjoint(b["inputs"]) and a["scored"] != b["scored"]
    produce(broker, a["scored"], [{"id": "only-in-a"}])
    assert consume(broker, a["scored"], 1, timeout=10) == [{"id": "only-in-a"}]
    assert consume(broker, b["scored"], None, timeout=1.5) == []


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_log_level_names_map_to_a_rust_log_filter() -> None:
    assert rust_log_filter("warn") == "warn"
    assert rust_log_filter("WARNING") == "warn"
    assert rust_log_filter("off") == "off"
    # More than warn only for tansu's own crates (the old default was exactly this at info).
    assert rust_log_filter("info") == "warn,tansu=info"
    assert rust_log_filter("warn,tansu_storage=debug") == "warn,tansu_storage=debug"  # a filter passes through
    with pytest.raises(ValueError, match="verbose"):
        rust_log_filter("verbose")


def test_log_level_argument_then_env_then_warn_and_rust_log_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LOG_ENV, raising=False)
    monkeypatch.setenv("RUST_LOG", "trace")  # meant for some other Rust tool: must not reach tansu
    assert resolve_log_level() == "warn"
    assert EmbeddedBroker().rust_log == "warn"
    monkeypatch.setenv(LOG_ENV, "info")
    assert EmbeddedBroker().rust_log == "warn,tansu=info"
    assert EmbeddedBroker(log_level="error").rust_log == "error"
    with pytest.raises(ValueError):
        EmbeddedBroker(log_level="loud")


def _traffic(b: EmbeddedBroker, topic: str, n: int = 200) -> None:
    """Produce and read back n records: a few hundred requests, each a handful of spans at info."""
    b.create_topics([topic], partitions=2)
    produce(b, topic, [{"id": str(i), "text": f"item {i}"} for i in range(n)])
    assert len(consume(b, topic, n, timeout=20)) == n


@slow
def test_default_log_level_is_quiet_under_traffic_and_info_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(LOG_ENV, raising=False)
    quiet_log, loud_log = tmp_path / "warn.log", tmp_path / "info.log"
    with EmbeddedBroker(log_file=quiet_log) as quiet, EmbeddedBroker(log_file=loud_log, log_level="info") as loud:
        _traffic(quiet, "log.quiet")
        _traffic(loud, "log.loud")
    quiet_bytes, loud_bytes = quiet_log.stat().st_size, loud_log.stat().st_size
    print(f"\nbroker log after 200 records in and out: warn {quiet_bytes} B, info {loud_bytes:,} B")
    assert quiet.log_level == "warn"
    assert quiet_bytes < 10_000, quiet_log.read_text(errors="replace")[-2000:]
    assert quiet.log_bytes == quiet_bytes  # nothing dropped below the cap
    assert loud_bytes > 10 * max(quiet_bytes, 1_000), (quiet_bytes, loud_bytes)


@slow
def test_log_file_is_capped_and_the_rest_still_drained(tmp_path: Path) -> None:
    log = tmp_path / "capped.log"
    with EmbeddedBroker(log_file=log, log_level="info", log_max_bytes=4096) as b:
        _traffic(b, "log.capped", 50)  # the broker keeps answering: its pipe never fills
    text = log.read_bytes()
    assert len(text) < 4096 + 200 and text.rstrip().endswith(b"the rest is dropped")
    assert b.log_bytes > 4096
