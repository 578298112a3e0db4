"""The stalled-fetch watch: a position that does not move while records wait, once per stall."""

from __future__ import annotations

from monitor.stream.stall import StallWatch


def test_a_moving_position_is_never_a_stall() -> None:
    w = StallWatch(after_s=10)
    assert not any(w.stalled("p0", pos, end_offset=500, now_s=t) for t, pos in enumerate(range(0, 400, 10)))


def test_an_idle_partition_at_its_end_is_not_a_stall() -> None:
    w = StallWatch(after_s=10)
    assert not any(w.stalled("p0", 100, end_offset=100, now_s=t) for t in range(60))
    assert not w.stalled("p0", 100, end_offset=None, now_s=61)


def test_records_waiting_behind_a_still_position_are_a_stall_once_per_wait() -> None:
    w = StallWatch(after_s=10)
    fired = [t for t in range(35) if w.stalled("p0", 100, end_offset=190, now_s=t)]
    assert fired == [10, 20, 30]  # then again only after another full wait
    assert w.still("p1", 5, 0) == 0 and w.still("p1", 5, 4) == 4  # partitions are watched apart


def test_forget_starts_the_wait_over() -> None:
    w = StallWatch(after_s=10)
    w.still("p0", 100, 0)
    w.forget("p0")
    assert not w.stalled("p0", 100, end_offset=190, now_s=15)
    assert w.stalled("p0", 100, end_offset=190, now_s=25)


def test_lag_of_a_partition_revoked_while_its_position_was_asked_is_not_set() -> None:
    """A rebalance between reading a partition's position and setting its gauge leaves no stale series."""
    import asyncio
    from types import SimpleNamespace

    from faust.types import TP

    from monitor.stream.lag import measure_lag
    from monitor.stream.metrics import Metrics

    kept, moved = TP("news", 0), TP("news", 1)

    class Consumer:
        def __init__(self) -> None:
            self.owned = {kept, moved}

        def assignment(self) -> set[TP]:
            return set(self.owned)

        def highwater(self, tp: TP) -> int:
            return 10

        async def position(self, tp: TP) -> int:
            if tp == moved:
                self.owned = {kept}  # revoked while this await was pending
            return 4

    metrics = Metrics()
    asyncio.run(measure_lag(SimpleNamespace(consumer=Consumer()), metrics, {"news"}, StallWatch()))  # type: ignore[arg-type]
    lag = {s.labels["partition"]: s.value for s in metrics.consumer_lag.collect()[0].samples}
    assert lag == {"0": 6.0}
