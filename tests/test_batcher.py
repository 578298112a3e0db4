from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from monitor.batcher import MicroBatcher


def test_concurrent_requests_share_batches_off_the_loop() -> None:
    sizes: list[int] = []
    threads: set[str] = set()

    def run(texts: Sequence[str]) -> list[str]:
        threads.add(threading.current_thread().name)
        return [t.upper() for t in texts]

    async def main() -> list[str]:
        b = MicroBatcher(run, max_batch=8, max_wait_s=0.05, on_batch=lambda n, _s: sizes.append(n))
        out = await asyncio.gather(*(b.score(f"t{i}") for i in range(20)))
        await b.close()
        return list(out)

    out = asyncio.run(main())
    assert out == [f"T{i}" for i in range(20)]
    assert sum(sizes) == 20 and max(sizes) == 8
    assert threading.main_thread().name not in threads


def test_model_error_reaches_every_waiter_and_batcher_survives() -> None:
    calls = {"n": 0}

    def run(texts: Sequence[str]) -> list[int]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return [len(t) for t in texts]

    async def main() -> int:
        b = MicroBatcher(run, max_batch=4, max_wait_s=0.01)
        with pytest.raises(RuntimeError, match="boom"):
            await b.score("abc")
        result = await b.score("abcd")
        await b.close()
        return result

    assert asyncio.run(main()) == 4
