"""The kept in-memory store: which changelog offsets it claims to hold, and what it drops.

Faust's recovery reads each assigned changelog partition from the offset after
`persisted_offset`; a claim one too high would skip a record, one kept for a
partition whose keys were dropped would skip them all. The worker tests drive
the store end to end (kill and restart, broker restart, two workers).
"""

from __future__ import annotations

import asyncio
import weakref
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.streams import _current_event
from faust.types import TP

from monitor.settings import Settings
from monitor.stream.app import table_store
from monitor.stream.store import KeptMemoryStore, clamp_to_end

CHANGELOG = "app-windows-changelog"


def tp(p: int) -> TP:
    return TP(CHANGELOG, p)


class Event(SimpleNamespace):
    """What the store reads of a Faust event (a class: the current event is held by weak reference)."""


def event(key: str, value: Any, partition: int, offset: int) -> Any:
    message = SimpleNamespace(
        value=b"x" if value is not None else None, partition=partition, offset=offset, tp=tp(partition)
    )
    return Event(key=key, value=value, message=message)


@pytest.fixture
def store() -> KeptMemoryStore:
    return KeptMemoryStore("kept://memory", faust.App("store-test"), table=None, table_name="windows")


def apply(store: KeptMemoryStore, *events: Any) -> None:
    store.apply_changelog_batch(events, to_key=lambda k: k, to_value=lambda v: v)


def test_recovery_claims_the_highest_offset_it_applied_per_partition(store: KeptMemoryStore) -> None:
    assert store.persisted_offset(tp(0)) is None  # nothing held: Faust reads from the start
    apply(store, event("a", 1, 0, 5), event("b", 2, 1, 3), event("a", 3, 0, 7), event("c", 4, 0, 6))
    assert (store.persisted_offset(tp(0)), store.persisted_offset(tp(1))) == (7, 3)
    assert dict(store.data) == {"a": 3, "b": 2, "c": 4}


def test_own_writes_acknowledged_out_of_order_never_lower_the_claim(store: KeptMemoryStore) -> None:
    store.set_persisted_offset(tp(2), 40)
    store.set_persisted_offset(tp(2), 38)  # an earlier send's acknowledgement arriving late
    assert store.persisted_offset(tp(2)) == 40


def test_a_partition_that_moved_away_loses_its_keys_and_its_claim(
    store: KeptMemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    apply(store, event("a", 1, 0, 5), event("b", 2, 1, 3))
    with caplog.at_level("INFO", logger="monitor.stream.store"):
        asyncio.run(store.on_recovery_completed({tp(0)}, set()))
    assert "2 changelog records read, 1 keys held" in caplog.text
    assert store.restored == 0  # counted afresh for the next recovery
    assert dict(store.data) == {"a": 1}
    assert store.persisted_offset(tp(0)) == 5
    assert store.persisted_offset(tp(1)) is None  # taken back later: read from the start


def test_keys_written_live_are_dropped_with_their_partition(store: KeptMemoryStore) -> None:
    # A key first written by the stream (never seen in recovery) still belongs to its partition.
    tick = event("tick", None, 3, 0)
    token = _current_event.set(weakref.ref(tick))
    try:
        store["live"] = {"p": 3}
    finally:
        _current_event.reset(token)
    apply(store, event("kept", 1, 0, 1))
    asyncio.run(store.on_recovery_completed({tp(0)}, set()))
    assert dict(store.data) == {"kept": 1}


def test_tombstones_delete_and_deleted_keys_are_forgotten(store: KeptMemoryStore) -> None:
    apply(store, event("a", 1, 0, 1), event("a", None, 0, 2))
    assert "a" not in store.data and store.persisted_offset(tp(0)) == 2
    apply(store, event("b", 1, 1, 1))
    del store["b"]
    asyncio.run(store.on_recovery_completed({tp(0), tp(1)}, set()))
    assert dict(store.data) == {}


def test_the_worker_uses_it_for_memory_tables_under_at_least_once_only() -> None:
    assert table_store(Settings()) == "kept://memory"
    app = faust.App("store-url-test")
    table = app.Table("windows", default=None, store=table_store(Settings()))
    assert isinstance(table.data, KeptMemoryStore)  # the URL Faust resolves, not its fallback
    eos = Settings.model_validate({"worker": {"processing_guarantee": "exactly_once"}})
    assert table_store(eos) == "memory://"  # only a full re-read rolls back an aborted transaction's writes
    rocks = Settings.model_validate({"worker": {"store": "rocksdb://"}})
    assert table_store(rocks) == "rocksdb://"


def test_a_claim_beyond_the_end_of_the_changelog_is_lowered_not_a_crash(store: KeptMemoryStore) -> None:
    # The broker lost the last two records this worker wrote (noida-db on a restart): Faust's own
    # check would stop the worker; recovery starts at the end instead, and later writes count again.
    store.set_persisted_offset(tp(0), 317)
    store.set_persisted_offset(tp(1), 40)

    async def build_offsets(self: Any, consumer: Any, tps: set[TP], destination: dict, title: str) -> None:
        for t in tps:
            destination[t] = store.persisted_offset(t)

    recovery = SimpleNamespace(
        active_highwaters={tp(0): 315, tp(1): 90}, tp_to_table={t: SimpleNamespace(data=store) for t in (tp(0), tp(1))}
    )
    starts: dict[TP, int] = {}
    asyncio.run(clamp_to_end(build_offsets)(recovery, None, {tp(0), tp(1)}, starts, "active"))
    assert starts == {tp(0): 315, tp(1): 40}
    assert store.persisted_offset(tp(0)) == 315
    store.set_persisted_offset(tp(0), 316)  # the next write lands on an offset the broker handed out again
    assert store.persisted_offset(tp(0)) == 316
