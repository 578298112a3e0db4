"""The faust consumer fixes: never commit past a held message; no seek racing the fetcher after recovery;
fetched records not delivered are read again; a resume of a running flow keeps what is queued."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree
from mode.utils.queues import FlowControlEvent, FlowControlQueue

from monitor.stream import faust_fixes

TP0 = TP("events", 0)


@dataclass(eq=False)
class Msg:
    tp: TP
    offset: int
    acked: bool = False
    generation_id: int | None = 1


# faust's own method, whether or not a worker in this process has installed the guard already
_ORIGINAL = getattr(Consumer._new_offset, "__wrapped__", Consumer._new_offset)


def consumer(committed: int | None, acked: list[int], held: list[Msg], generation: int = 1) -> Any:
    c = SimpleNamespace(
        app=SimpleNamespace(consumer_generation_id=generation),
        _acked=defaultdict(list),
        _acked_index=defaultdict(set),
        _gap=defaultdict(IntervalTree),
        _committed_offset=defaultdict(lambda: None),
        _unacked_messages=held,
    )
    c._acked[TP0] = list(acked)
    c._acked_index[TP0] = set(acked)
    c._committed_offset[TP0] = committed
    return c


guarded = faust_fixes.guarded_new_offset(_ORIGINAL)


def test_upstream_commits_past_a_held_message_at_the_committed_offset() -> None:
    """The faust behaviour the guard exists for; when this fails, upstream has fixed it and the guard can go."""
    c = consumer(committed=10, acked=[11, 12], held=[Msg(TP0, 10)])
    assert _ORIGINAL(c, TP0) == 13


def test_guard_holds_the_commit_at_the_held_message() -> None:
    held = Msg(TP0, 10)
    c = consumer(committed=10, acked=[11, 12], held=[held])
    assert guarded(c, TP0) is None
    assert c._acked[TP0] == [11, 12]  # nothing dropped while waiting
    held.acked = True
    c._acked[TP0].append(10)
    c._acked_index[TP0].add(10)
    assert guarded(c, TP0) == 13


def test_guard_commits_everything_before_the_held_message() -> None:
    c = consumer(committed=10, acked=[10, 11, 12, 13, 14, 16, 17], held=[Msg(TP0, 15)])
    assert guarded(c, TP0) == 15
    assert c._acked[TP0] == [16, 17]


def test_without_held_messages_the_result_is_upstreams() -> None:
    for committed, acked in [(None, [0, 1, 2]), (10, [10, 11, 13]), (10, [12, 13]), (5, [])]:
        a, b = consumer(committed, acked, []), consumer(committed, acked, [])
        assert guarded(a, TP0) == _ORIGINAL(b, TP0)
        assert a._acked[TP0] == b._acked[TP0]


def test_other_partitions_and_old_generations_do_not_hold_the_commit() -> None:
    held = [Msg(TP("events", 1), 3), Msg(TP0, 10, generation_id=0), Msg(TP0, 11, acked=True)]
    c = consumer(committed=10, acked=[10, 11, 12], held=held, generation=1)
    assert guarded(c, TP0) == 13


def test_install_wraps_each_method_once() -> None:
    def wrapped() -> list[Any]:
        return [
            Consumer._new_offset,
            Consumer.getmany,
            FlowControlEvent.resume,
            *(getattr(Recovery, n) for n in faust_fixes.RESUMING_METHODS),
        ]

    faust_fixes.install()
    first = wrapped()
    faust_fixes.install()
    assert faust_fixes.installed()
    assert wrapped() == first


_RESUME = getattr(FlowControlEvent.resume, "__wrapped__", FlowControlEvent.resume)  # mode's own


def test_resume_of_a_running_flow_keeps_the_queued_records() -> None:
    """Recovery resumes a flow that already runs; upstream that empties the stream queues, losing what was in them."""

    async def run() -> None:
        resume = faust_fixes.resume_if_suspended(_RESUME)
        flow = FlowControlEvent(initially_suspended=True)
        queue: FlowControlQueue[str] = FlowControlQueue(flow_control=flow, clear_on_resume=True)
        queue.put_nowait("fetched during the rebalance")
        resume(flow)  # after a suspension: cleared, as upstream does
        assert flow.is_active() and queue.empty()
        queue.put_nowait("fetched after the partitions were resumed")
        resume(flow)  # already running: nothing to clear
        assert flow.is_active() and queue.qsize() == 1
        _RESUME(flow)  # upstream's resume of the same running flow
        assert queue.empty()  # the record the agent never saw
        flow.suspend()
        queue.put_nowait("stale")
        resume(flow)
        assert flow.is_active() and queue.empty()

    asyncio.run(run())


class FakeConsumer:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def resume_partitions(self, tps: set[str]) -> None:
        self.log.append(f"resume {sorted(tps)}")

    async def perform_seek(self) -> None:
        self.log.append("seek")


async def recovery_end(self: Any) -> str:
    """What faust's recovery does at its end: resume the stream partitions, then seek them."""
    self.app.consumer.resume_partitions({"news-0"})
    await self.app.consumer.perform_seek()
    return "ready"


def test_recovery_end_resumes_without_seeking() -> None:
    log: list[str] = []
    rec = SimpleNamespace(app=SimpleNamespace(consumer=FakeConsumer(log)))
    assert asyncio.run(faust_fixes.without_seek(recovery_end)(rec)) == "ready"
    assert log == ["resume ['news-0']"]
    assert "perform_seek" not in vars(rec.app.consumer)  # the class's method again
    asyncio.run(rec.app.consumer.perform_seek())
    assert log[-1] == "seek"  # other seeks (faust's own, outside recovery) are untouched


def test_the_wrapped_methods_exist_in_this_faust() -> None:
    """If faust renames them, the fix would silently not apply: fail here instead."""
    for name in faust_fixes.RESUMING_METHODS:
        assert callable(getattr(Recovery, name))


def rec(offset: int) -> Any:
    return SimpleNamespace(offset=offset)


def test_first_dropped_is_the_first_fetched_offset_past_what_was_delivered() -> None:
    a, b, c = TP("news", 0), TP("news", 1), TP("news", 2)
    fetched = {a: [rec(10), rec(11), rec(12)], b: [rec(5), rec(6)], c: [rec(7)]}
    assert faust_fixes.first_dropped(fetched, {a: 10, c: 7}) == {a: 11, b: 5}
    assert faust_fixes.first_dropped(None, {}) == {}


class FetchingConsumer:
    """What the wrapped getmany touches: faust's own getmany stops after `deliver` records (flow stopped)."""

    def __init__(self, deliver: int, generation_changes: bool = False) -> None:
        self.tp = TP("news", 0)
        self.records = {self.tp: [rec(o) for o in range(100, 110)]}
        self.deliver, self.generation_changes = deliver, generation_changes
        self.app = SimpleNamespace(consumer_generation_id=1)
        self.seeks: list[tuple[TP, int]] = []

    def assignment(self) -> set[TP]:
        return {self.tp}

    async def position(self, tp: TP) -> int:
        return 110  # aiokafka is past everything it fetched

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))


async def faust_getmany(self: Any, timeout: float) -> Any:
    records, _ = await self._wait_next_records(timeout)
    if self.generation_changes:
        self.app.consumer_generation_id = 2
    for r in records[self.tp][: self.deliver]:
        yield self.tp, r


async def faust_wait(self: Any, timeout: float) -> Any:
    return self.records, None


def drive(consumer: FetchingConsumer) -> list[int]:
    getmany, wait = faust_fixes.rewinding_getmany(faust_getmany, faust_wait)
    consumer._wait_next_records = wait.__get__(consumer)  # type: ignore[attr-defined]

    async def run() -> list[int]:
        return [m.offset async for _, m in getmany(consumer, 1.0)]

    return asyncio.run(run())


def test_records_fetched_but_not_delivered_are_read_again() -> None:
    consumer = FetchingConsumer(deliver=4)
    assert drive(consumer) == [100, 101, 102, 103]
    assert consumer.seeks == [(consumer.tp, 104)]  # upstream: 104-109 gone, later committed past as a gap


def test_nothing_sought_when_all_was_delivered_or_the_generation_changed() -> None:
    full = FetchingConsumer(deliver=10)
    drive(full)
    assert full.seeks == []
    rebalanced = FetchingConsumer(deliver=4, generation_changes=True)
    drive(rebalanced)
    assert rebalanced.seeks == []  # positions start again at the committed offsets
