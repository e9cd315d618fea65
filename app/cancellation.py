"""Cancel a handler's work when its client disconnects, so abandoned requests stop spending
engine time (vLLM's `with_cancellation`, reduced to what we need)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.types import Receive

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client went away before its answer was ready."""


async def _cancel_on_disconnect(receive: Receive, task: asyncio.Task[object], gone: asyncio.Event) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.set()
    task.cancel()


async def cancel_on_disconnect(receive: Receive, work: Awaitable[T]) -> T:
    """Await `work`; if the client disconnects first (`receive` says so), cancel it and raise
    ClientDisconnected. The request's body must have been read.

    `work` runs in the calling task, not a task of its own: it starts at once and its result
    needs no hop back, which spares the answer two passes of the event loop. A watcher task
    cancels the caller when the client leaves; any other cancellation propagates as it is."""
    task = asyncio.current_task()
    assert task is not None, "cancel_on_disconnect must run in a task"
    gone = asyncio.Event()
    watcher = asyncio.ensure_future(_cancel_on_disconnect(receive, task, gone))
    try:
        return await work
    except asyncio.CancelledError:
        if not gone.is_set():
            raise
        task.uncancel()  # the cancellation was ours and ends here
        raise ClientDisconnected from None
    finally:
        watcher.cancel()
