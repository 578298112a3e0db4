"""The outbox: every output confirmed, failures retried, what never got through reported by origin."""

from __future__ import annotations

import asyncio
from typing import Any

from monitor.stream.outbox import Outbox


class FlakySink:
    """Each send returns a future; the first `fail_times[key]` sends of a key fail."""

    def __init__(self, fail_times: dict[str, int], raise_on_send: bool = False) -> None:
        self.fail_times = dict(fail_times)
        self.raise_on_send = raise_on_send
        self.delivered: list[str] = []
        self.attempts: dict[str, int] = {}

    def sender(self, key: str) -> Any:
        async def send() -> asyncio.Future[str]:
            self.attempts[key] = self.attempts.get(key, 0) + 1
            fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            if self.fail_times.get(key, 0) > 0:
                self.fail_times[key] -= 1
                if self.raise_on_send:
                    raise RuntimeError(f"send {key} refused")
                fut.set_exception(RuntimeError(f"{key} not delivered"))
            else:
                self.delivered.append(key)
                fut.set_result(key)
            return fut

        return send


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_all_delivered_first_time() -> None:
    sink = FlakySink({})

    async def go() -> dict[Any, BaseException]:
        box = Outbox(retry_s=1)
        for k in "abc":
            await box.send(sink.sender(k), origin=k)
        assert len(box) == 3
        return await box.confirm()

    assert run(go()) == {}
    assert sink.delivered == ["a", "b", "c"]
    assert len(Outbox()) == 0


def test_failed_sends_are_retried_until_delivered() -> None:
    sink = FlakySink({"b": 2})
    retries: list[int] = []

    async def go() -> dict[Any, BaseException]:
        box = Outbox(retry_s=5, backoff_s=0.01, on_retry=retries.append)
        for k in "abc":
            await box.send(sink.sender(k), origin=k)
        return await box.confirm()

    assert run(go()) == {}
    assert sorted(sink.delivered) == ["a", "b", "c"]
    assert sink.attempts == {"a": 1, "b": 3, "c": 1}
    assert retries == [1, 1]


def test_send_that_raises_is_retried_too() -> None:
    sink = FlakySink({"x": 1}, raise_on_send=True)

    async def go() -> dict[Any, BaseException]:
        box = Outbox(retry_s=5, backoff_s=0.01)
        await box.send(sink.sender("x"), origin=1)
        return await box.confirm()

    assert run(go()) == {}
    assert sink.delivered == ["x"]


def test_gives_up_after_retry_window_and_names_the_origin() -> None:
    sink = FlakySink({"b": 10_000})

    async def go() -> dict[Any, BaseException]:
        box = Outbox(retry_s=0.2, backoff_s=0.02, max_backoff_s=0.05)
        await box.send(sink.sender("a"), origin=0)
        await box.send(sink.sender("b"), origin=1)
        return await box.confirm()

    lost = run(go())
    assert list(lost) == [1]
    assert "b not delivered" in str(lost[1])
    assert sink.delivered == ["a"]
    assert sink.attempts["b"] >= 3


def test_confirm_empties_the_box() -> None:
    sink = FlakySink({})

    async def go() -> tuple[int, int]:
        box = Outbox()
        await box.send(sink.sender("a"))
        await box.confirm()
        return len(box), len(await box.confirm())

    assert run(go()) == (0, 0)
