"""uvicorn's server, stopped by the app's lifecycle rather than at once by a signal.

SIGTERM or SIGINT starts the app's drain (app/lifecycle.py) while the server keeps listening, so
/health and new requests get 503 instead of a refused connection; a second signal ends the
requests in flight at once. The server stops when the lifecycle says so: drained, or the engine
died. The signal is not raised again after the drain (uvicorn does that by default), so a clean
shutdown exits 0 and the lifecycle's exit code is the process's.
"""

from __future__ import annotations

import asyncio
import socket
from types import FrameType

import uvicorn

from app.lifecycle import Lifecycle


class Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self._loop: asyncio.AbstractEventLoop | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler runs between two bytecodes of the loop's thread: hand the work to the loop.
        if self._loop is None:  # before the loop runs there is nothing to drain
            self.should_exit = True
            return
        self._loop.call_soon_threadsafe(self.lifecycle.shutdown)

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        stopper = asyncio.ensure_future(self._stop_when_the_app_stops())
        try:
            await super().serve(sockets)
        finally:
            stopper.cancel()

    async def _stop_when_the_app_stops(self) -> None:
        await self.lifecycle.stopped.wait()
        self.should_exit = True
