"""Four faust-streaming (and mode) bugs that lose input records, mended at start-up.

All were found by restarting workers (an item missing from a window after a
restart, more often on a busy machine) and are present in faust-streaming
0.15.x. `install` applies them, once per process; each is a small wrapper
around the library's own method, not a copy of it.

1. **Commit past a held message.** faust computes the offset to commit from
   the acked offsets: the first run of consecutive acked offsets, unless there
   is a gap of *more than one* between the committed offset and the first
   acked one. A single unacked message exactly at the committed offset is
   stepped over: committed 10, offset 10 still in flight, 11 and 12 acked,
   it commits 13, and offset 10 is never redelivered after a restart. The
   aggregation agent hits this constantly: it acks tick records at once but
   holds trend events until the table write that persists them. The guard
   leaves the offsets at and after the oldest in-flight message of a
   partition (delivered to a stream in this consumer generation, not yet
   acked) out of the computation; offsets before it commit exactly as before,
   so gaps from compaction and transaction markers are still stepped over.

2. **A seek racing the fetcher.** When a rebalance's table recovery ends,
   faust resumes the stream partitions and then seeks every assigned
   partition to its committed offset. The fetcher is already running: records
   fetched in between are delivered while the seek rewinds the position
   underneath them, the fetcher's "already read" mark ends up past the
   rewound position, and the records fetched again are dropped as read; some
   are never delivered at all (seen: offsets 103-115 of a restart that
   resumed at 100, and whole runs of a burst). With eager rebalancing every
   assignment is fresh, so the client already starts each partition at its
   committed offset and the seek only does harm: it is left out there.

3. **Fetched records dropped.** `getmany` stops delivering a fetched batch
   when the flow stops or the generation changes, and skips partitions that
   are not active yet, although the client has already moved past those
   records. Faust relied on the seek after recovery (left out by fix 2) to
   read them again; without it they were never delivered and were committed
   past as a gap (23-27 records per partition in 1 of 30 restarts,
   `scripts/restart_probe.py`). The mend seeks each such partition back to
   its first fetched record not delivered, within the same generation only
   (a rebalance starts again at the committed offsets anyway).

4. **Queued records cleared by a resume.** Streams read from queues that
   mode's `FlowControlEvent.resume()` empties, so that nothing fetched during
   a rebalance is processed after it. But recovery calls `resume()` again at
   its end, after the input partitions were resumed and while the flow is
   already running: a record the fetcher queued for the scoring agent in that
   moment was thrown away, never processed and never acked, and the next
   commit stepped over it (faust lets a gap of one record at the head of the
   acked offsets through). One single record lost, in about 1 of 600 worker
   restarts (`scripts/restart_probe.py --trace` caught one: delivered, queued,
   never taken by the agent, committed past). The mend makes `resume()` of a
   flow that is already running change nothing; a resume after a real
   suspension still clears the queues as before, and records of an older
   generation left in a queue are dropped by the stream's own generation check.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Protocol

from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer
from faust.types import TP
from mode.utils.queues import FlowControlEvent

_MARK = "__finsent_fix__"
log = logging.getLogger(__name__)
# Recovery's two ways of handing the stream partitions back after a rebalance:
# after restoring tables, and when there is nothing to restore.
RESUMING_METHODS = ("on_recovery_completed", "_resume_streams")


class _Held(Protocol):
    tp: TP
    offset: int
    acked: bool
    generation_id: int | None


def oldest_in_flight(messages: Iterable[_Held], tp: TP, generation: int | None) -> int | None:
    """The lowest offset of `tp` delivered in this generation and not acked yet, if any.

    A message from an earlier generation does not count: after a rebalance the
    partition is read again from its committed offset, so its copy in this
    generation stands in for it.
    """
    offsets = [
        m.offset
        for m in list(messages)
        if m.tp == tp and not m.acked and (generation is None or m.generation_id in (None, generation))
    ]
    return min(offsets) if offsets else None


def guarded_new_offset(original: Callable[[Any, TP], int | None]) -> Callable[[Any, TP], int | None]:
    """`original` computed only over acked offsets before the oldest in-flight message."""

    @functools.wraps(original)
    def _new_offset(self: Any, tp: TP) -> int | None:
        generation = getattr(self.app, "consumer_generation_id", None)
        limit = oldest_in_flight(self._unacked_messages, tp, generation)
        if limit is None:
            return original(self, tp)
        acked: list[int] = self._acked[tp]
        later = [o for o in acked if o >= limit]
        acked[:] = [o for o in acked if o < limit]
        try:
            return original(self, tp)
        finally:
            acked.extend(later)
            acked.sort()

    setattr(_new_offset, _MARK, True)
    return _new_offset


def without_seek(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """`original` with the consumer's `perform_seek` turned into a no-op while it runs."""

    @functools.wraps(original)
    async def _resuming(self: Any, *args: Any, **kwargs: Any) -> Any:
        consumer = self.app.consumer

        async def no_seek() -> None:
            log.debug("recovery's seek to committed offsets left out: positions are already there")

        consumer.perform_seek = no_seek
        try:
            return await original(self, *args, **kwargs)
        finally:
            vars(consumer).pop("perform_seek", None)  # the class's method again

    setattr(_resuming, _MARK, True)
    return _resuming


def first_dropped(fetched: Any, delivered: dict[Any, int]) -> dict[Any, int]:
    """Per partition, the lowest fetched offset not delivered (beyond the last one delivered, or all)."""
    out = {}
    for tp, records in (fetched or {}).items():
        rest = [r.offset for r in records if tp not in delivered or r.offset > delivered[tp]]
        if rest:
            out[tp] = min(rest)
    return out


def rewinding_getmany(
    original: Callable[[Any, float], AsyncIterator[tuple[TP, Any]]],
    original_wait: Callable[[Any, float], Awaitable[tuple[Any, Any]]],
) -> tuple[Callable[[Any, float], AsyncIterator[tuple[TP, Any]]], Callable[[Any, float], Awaitable[tuple[Any, Any]]]]:
    """`getmany`, seeking each partition back to the first fetched record it did not deliver."""

    @functools.wraps(original_wait)
    async def _wait_next_records(self: Any, timeout: float) -> tuple[Any, Any]:
        records, active = await original_wait(self, timeout)
        self._finsent_fetched = (records, getattr(self.app, "consumer_generation_id", None))
        return records, active

    @functools.wraps(original)
    async def _getmany(self: Any, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        delivered: dict[Any, int] = {}
        self._finsent_fetched = (None, None)
        async for tp, message in original(self, timeout):
            delivered[tp] = message.offset
            yield tp, message
        records, generation = self._finsent_fetched
        self._finsent_fetched = (None, None)
        if generation != getattr(self.app, "consumer_generation_id", None):
            return  # a rebalance: positions start again at the committed offsets
        dropped = first_dropped(records, delivered)
        assigned = self.assignment() if dropped else set()  # once per fetch: ask only when there is a seek to make
        for tp, offset in dropped.items():
            try:
                position = await self.position(tp) if tp in assigned else None
                if position is not None and position > offset:
                    log.info(
                        "%s: %d fetched records were not delivered; reading again from offset %d",
                        tp,
                        position - offset,
                        offset,
                    )
                    await self.seek(tp, offset)
            except Exception as exc:  # never stop the fetch loop over a mend
                log.warning("could not seek %s back to %d: %r", tp, offset, exc)

    setattr(_getmany, _MARK, True)
    return _getmany, _wait_next_records


def resume_if_suspended(original: Callable[[Any], None]) -> Callable[[Any], None]:
    """`FlowControlEvent.resume`, doing nothing (clearing no queue) when the flow is not suspended."""

    @functools.wraps(original)
    def _resume(self: Any) -> None:
        if self.is_active():
            return
        original(self)

    setattr(_resume, _MARK, True)
    return _resume


def install() -> None:
    """Apply the fixes to faust's classes (idempotent)."""
    if not getattr(Consumer._new_offset, _MARK, False):
        Consumer._new_offset = guarded_new_offset(Consumer._new_offset)  # type: ignore[method-assign,assignment]
    if not getattr(Consumer.getmany, _MARK, False):
        Consumer.getmany, Consumer._wait_next_records = rewinding_getmany(  # type: ignore[method-assign,assignment]
            Consumer.getmany, Consumer._wait_next_records
        )
    for name in RESUMING_METHODS:
        if not getattr(getattr(Recovery, name), _MARK, False):
            setattr(Recovery, name, without_seek(getattr(Recovery, name)))
    if not getattr(FlowControlEvent.resume, _MARK, False):
        FlowControlEvent.resume = resume_if_suspended(FlowControlEvent.resume)  # type: ignore[method-assign,assignment]


def installed() -> bool:
    return (
        bool(getattr(Consumer._new_offset, _MARK, False))
        and bool(getattr(Consumer.getmany, _MARK, False))
        and bool(getattr(FlowControlEvent.resume, _MARK, False))
        and all(getattr(getattr(Recovery, n), _MARK, False) for n in RESUMING_METHODS)
    )
