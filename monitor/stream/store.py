"""The in-memory table store, without re-reading the changelog of partitions it keeps.

Faust's memory store cannot say which changelog offsets its data already
holds, so every rebalance re-reads each assigned changelog partition from its
first record, although the data for a partition this worker keeps is still in
memory. A window table's changelog grows by one full key state per key per
tick, and a broker that does not compact it (noida-db; Kafka too, until the
active segment rolls) makes that re-read grow with uptime: after 4 minutes of
50 items/s one broker restart re-read 1,400 records of ~20 KB for 3 keys, took
10 s and raised the worker's RSS by 180 MB that it never gave back.

This store remembers, per changelog partition, the highest offset it holds
(its own writes once the broker acknowledged them, and what recovery
applied), so Faust's recovery reads only what came after. When a partition
moves away its keys are dropped (as the memory store does) and so is its
offset: taken back later, it is read from the start again. Records another
worker wrote meanwhile lie after the remembered offset and are read, so a
partition that moved away and back within one recovery still ends up with
the latest state.

A broker that loses records it acknowledged (noida-db on a restart) can end a
changelog partition below the offset this store holds. Faust would stop the
worker on that (its consistency check); instead the claim is lowered to the
partition's end, with a warning: the state in memory is the newer one, the
next writes of those keys replace what the broker lost, and records written
after the end are read again.

Only for at-least-once processing: under exactly-once an aborted transaction
leaves writes in memory that the changelog never committed, and only a full
re-read (read_committed) rolls them back.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from faust import stores
from faust.stores.memory import Store as MemoryStore
from faust.streams import current_event
from faust.tables.recovery import Recovery
from faust.types import TP, EventT

log = logging.getLogger(__name__)
_MARK = "__finsent_kept__"

SCHEME = "kept"
# Faust falls back to the app's store when a table's store URL is falsy, and a URL with neither
# host nor path ("kept://") is falsy: this one has a host.
URL = f"{SCHEME}://memory"


class KeptMemoryStore(MemoryStore):
    def __post_init__(self) -> None:
        super().__post_init__()
        self._offsets: dict[TP, int] = {}
        self.restored = 0  # changelog records applied by the recovery under way

    def persisted_offset(self, tp: TP) -> int | None:
        return self._offsets.get(tp)

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        self._offsets[tp] = max(offset, self._offsets.get(tp, -1))

    def apply_changelog_batch(
        self, batch: Iterable[EventT], to_key: Callable[[Any], Any], to_value: Callable[[Any], Any]
    ) -> None:
        events = list(batch)
        super().apply_changelog_batch(events, to_key, to_value)
        self.restored += len(events)
        for event in events:
            self.set_persisted_offset(event.message.tp, event.message.offset)

    def __setitem__(self, key: Any, value: Any) -> None:
        # The memory store learns a key's partition only from recovery; a key written since then
        # must be dropped too when its partition moves away.
        event = current_event()
        if event is not None:
            self._key_partition[key] = event.message.partition
        super().__setitem__(key, value)

    def __delitem__(self, key: Any) -> None:
        self._key_partition.pop(key, None)
        super().__delitem__(key)

    def lower_claim(self, tp: TP, end: int) -> None:
        """The changelog partition ends at `end`, below what this store claimed: the broker lost records."""
        log.warning(
            "changelog %s[%s] ends at offset %s but this worker wrote up to %s: the broker lost acknowledged "
            "records; the state in memory is kept and those keys are written again on their next change",
            tp.topic, tp.partition, end, self._offsets.get(tp),
        )  # fmt: skip
        self._offsets[tp] = end

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        await super().on_recovery_completed(active_tps, standby_tps)
        for tp in [tp for tp in self._offsets if tp not in active_tps]:
            del self._offsets[tp]
        # What a rebalance cost: a worker that kept its partitions reads (almost) nothing.
        log.info("window table recovered: %d changelog records read, %d keys held", self.restored, len(self.data))
        self.restored = 0


def clamp_to_end(
    original: Callable[[Any, Any, set[TP], Any, str], Awaitable[None]],
) -> Callable[[Any, Any, set[TP], Any, str], Awaitable[None]]:
    """Recovery's start offsets, each kept store's claim lowered to its partition's end where it exceeds it.

    Recovery builds the active partitions' ends (highwaters) before their start
    offsets, and checks one against the other right after.
    """

    @functools.wraps(original)
    async def _build_offsets(self: Any, consumer: Any, tps: set[TP], destination: Any, title: str) -> None:
        await original(self, consumer, tps, destination, title)
        if title != "active":
            return
        for tp in tps:
            end, start = self.active_highwaters.get(tp), destination.get(tp)
            table = self.tp_to_table.get(tp)
            data = getattr(table, "data", None)
            if end is not None and start is not None and start > end and isinstance(data, KeptMemoryStore):
                data.lower_claim(tp, end)
                destination[tp] = end

    setattr(_build_offsets, _MARK, True)
    return _build_offsets


def register() -> None:
    """Make "kept://..." a store URL Faust resolves, and let recovery lower a claim the broker outran."""
    stores.STORES.aliases.setdefault(SCHEME, f"{__name__}:KeptMemoryStore")
    if not getattr(Recovery._build_offsets, _MARK, False):
        Recovery._build_offsets = clamp_to_end(Recovery._build_offsets)  # type: ignore[method-assign,assignment]
