"""The embedded broker: start, readiness, topics, produce/consume, clean stop, port conflicts.

tansu panics yet exits 0 when its port is taken (FACTS.md); these tests
pin down that `EmbeddedBroker` turns that into a `BrokerError` with a
clear message instead of a "ready" broker that is not there.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import pytest

from monitor.broker import BrokerError, EmbeddedBroker, create_topics, free_port
from tests.conftest import consume, consume_records, produce

pytestmark = pytest.mark.slow


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


def test_context_manager_restarts_on_a_new_port() -> None:
    with EmbeddedBroker() as b:
        first = b.port
        assert b.running
    assert not b.running
    with EmbeddedBroker() as b2:
        assert b2.port != first or not _port_open(first)
        assert b2.running


def test_port_in_use_by_a_listener_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(BrokerError, match=r"port \d+ .*already in use"):
            EmbeddedBroker(port=port).start(timeout=10)


def test_port_bound_but_not_listening_is_detected_not_reported_ready() -> None:
    # Passes the connect() pre-check; tansu then panics (and exits 0) on bind.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        b = EmbeddedBroker(port=port)
        with pytest.raises(BrokerError, match=r"(?i)in use"):
            b.start(timeout=10)
        assert not b.running


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
