"""Running awaitables together: results in order, or the first failure as it was, the rest cancelled."""

from __future__ import annotations

import asyncio

import pytest

from serving.concurrency import all_or_first_error


async def test_results_come_in_the_order_given() -> None:
    async def later(value: int, event: asyncio.Event, then: asyncio.Event | None) -> int:
        await event.wait()
        if then is not None:
            then.set()
        return value

    first, second = asyncio.Event(), asyncio.Event()
    second.set()  # the second finishes first, then lets the first finish
    assert await all_or_first_error([later(1, first, None), later(2, second, first)]) == [1, 2]


async def test_the_first_failure_is_raised_as_it_is_and_the_others_are_cancelled() -> None:
    cancelled = asyncio.Event()

    async def waits() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def fails() -> None:
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        await all_or_first_error([waits(), fails()])
    assert cancelled.is_set()
