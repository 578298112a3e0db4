"""Micro-batching of scoring requests from many concurrent agent actors.

Each actor awaits `score(text)`; the batcher gathers up to `max_batch`
requests or waits at most `max_wait_s` after the first one, then runs the
model in a thread so the event loop keeps serving heartbeats and fetches
while ONNX works. One batch runs at a time: onnxruntime already uses the
cores inside a call, and two concurrent calls only fight for them
(onnxruntime #16304).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")


class MicroBatcher(Generic[T]):
    def __init__(
        self,
        run_batch: Callable[[Sequence[str]], Sequence[T]],
        max_batch: int = 32,
        max_wait_s: float = 0.02,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self._run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._queue: asyncio.Queue[tuple[str, asyncio.Future[T]]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finsent-score")

    def set_runner(self, run_batch: Callable[[Sequence[str]], Sequence[T]]) -> None:
        """Swap the model function; the next batch uses it (hot model swap)."""
        self._run_batch = run_batch

    def _ensure_started(self) -> asyncio.Queue[tuple[str, asyncio.Future[T]]]:
        if self._queue is None or self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._loop(self._queue), name="finsent-batcher")
        return self._queue

    async def score(self, text: str) -> T:
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._ensure_started().put((text, fut))
        return await fut

    async def _loop(self, queue: asyncio.Queue[tuple[str, asyncio.Future[T]]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await queue.get()
            batch = [first]
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    # Take whatever is already waiting, without waiting more.
                    while len(batch) < self.max_batch and not queue.empty():
                        batch.append(queue.get_nowait())
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), timeout))
                except TimeoutError:
                    break
            texts = [t for t, _ in batch]
            runner = self._run_batch
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, runner, texts)
            except Exception as exc:  # the model failed: every waiter learns why
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            if self._on_batch:
                self._on_batch(len(batch), time.perf_counter() - started)
            for (_, fut), res in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(res)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self._executor.shutdown(wait=False, cancel_futures=True)
