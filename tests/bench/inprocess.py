"""The stub upstream (bench/stub.py) served inside the test's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from bench.client import get_json_bytes
from bench.stub import Faults, StubServer, Timing
from scripts.launch import free_port


@contextlib.asynccontextmanager
async def stub(timing: Timing, faults: Faults | None = None, context: int = 0) -> AsyncIterator[int]:
    """The stub in this process on a free port, once it answers /health; yields the port."""
    port = free_port()
    task = asyncio.create_task(StubServer(timing, faults, context).serve(port, lifetime=30))
    for _ in range(100):
        with contextlib.suppress(OSError):
            await get_json_bytes(port, "/health")
            break
        await asyncio.sleep(0.02)
    try:
        yield port
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
