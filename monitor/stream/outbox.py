"""Outputs of one unit of work, confirmed delivered before its input is acked.

Faust's `send(force=True)` hands a record to the producer and returns a
future; a failure there is only logged, and the input would be acked
anyway: an output silently lost. Some failures are never retried by the
producer itself (a broker that restarted answers `UnknownError` until its
topics are back). The outbox keeps every send of a unit, waits for all of
them, re-sends the failed ones with backoff for up to `retry_s`, and only
then reports what could not be delivered, by origin, so the caller can
dead-letter the input rather than drop it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

Sender = Callable[[], Awaitable[Awaitable[Any]]]


@dataclass
class _Pending:
    send: Sender
    origin: Hashable
    what: str
    future: Awaitable[Any] | None = None
    error: BaseException | None = None


@dataclass
class Outbox:
    retry_s: float = 30.0
    backoff_s: float = 0.25
    max_backoff_s: float = 5.0
    on_retry: Callable[[int], None] | None = None
    _pending: list[_Pending] = field(default_factory=list)

    async def send(self, send: Sender, origin: Hashable = None, what: str = "") -> None:
        """Start a send now (so records keep their order) and remember how to repeat it."""
        p = _Pending(send, origin, what)
        try:
            p.future = await send()
        except Exception as exc:
            p.error = exc
        self._pending.append(p)

    def __len__(self) -> int:
        return len(self._pending)

    async def confirm(self) -> dict[Hashable, BaseException]:
        """Wait for every send; retry failures; return {origin: last error} for what never got through."""
        pending, self._pending = self._pending, []
        deadline = time.monotonic() + self.retry_s
        delay = self.backoff_s
        while True:
            failed: list[_Pending] = []
            for p in pending:
                if p.error is None and p.future is not None:
                    try:
                        await p.future
                    except Exception as exc:
                        p.error = exc
                if p.error is not None:
                    failed.append(p)
            if not failed:
                return {}
            if time.monotonic() + delay > deadline:
                for p in failed:
                    log.error("gave up delivering %s after %.0f s: %r", p.what or "a record", self.retry_s, p.error)
                return {p.origin: p.error for p in failed if p.error is not None}
            log.warning("%d send(s) failed (%r); retrying in %.2f s", len(failed), failed[0].error, delay)
            if self.on_retry:
                self.on_retry(len(failed))
            await asyncio.sleep(delay)
            delay = min(self.max_backoff_s, delay * 2)
            for p in failed:
                p.error, p.future = None, None
                try:
                    p.future = await p.send()
                except Exception as exc:
                    p.error = exc
            pending = failed
