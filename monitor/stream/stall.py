"""Notice an input partition whose fetching has stopped although records wait, so it can be restarted.

Seen on the embedded broker after a worker restart, about once in fifteen
restarts on a busy machine: the consumer stays assigned to a partition, the
fetcher keeps polling, and not one record of that partition is ever
returned, while its other partitions flow. Nothing in the worker fails, so
nothing would say so; the items just wait forever. The worker's lag timer
feeds each input partition's position here once a second; a position that
has not moved for `after_s` while the log holds records beyond it is a stall,
and the worker seeks the partition to that same position, which makes the
client drop whatever fetch state it holds for it and fetch afresh. A slow
worker with a backlog keeps consuming, so its positions move and it is never
taken for stalled.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field


@dataclass
class StallWatch:
    after_s: float = 10.0
    _since: dict[Hashable, tuple[int, float]] = field(default_factory=dict)

    def still(self, tp: Hashable, position: int, now_s: float) -> float:
        """Record the partition's position; how long it has not moved (0 when it just did)."""
        last = self._since.get(tp)
        if last is None or last[0] != position:
            self._since[tp] = (position, now_s)
            return 0.0
        return now_s - last[1]

    def stalled(self, tp: Hashable, position: int, end_offset: int | None, now_s: float) -> bool:
        """True once per stall: records wait beyond `position` and it has not moved for `after_s`."""
        if end_offset is None or end_offset <= position or self.still(tp, position, now_s) < self.after_s:
            return False
        self._since[tp] = (position, now_s)  # the next restart only after another full wait
        return True

    def forget(self, tp: Hashable) -> None:
        self._since.pop(tp, None)
