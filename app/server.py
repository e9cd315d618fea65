"""uvicorn's server, stopped by the app's lifecycle rather than at once by a signal.

SIGTERM or SIGINT starts the app's drain (app/lifecycle.py): the server stops accepting
connections, every response says `Connection: close` (app/drain.py), and requests on connections
already open get 503 (/health too) while the requests in flight run on; a second signal ends
those at once. The server stops when the lifecycle says so (drained, or the engine died) and the
connections still open have been let go. The signal is not raised again after the drain (uvicorn
does that by default), so a clean shutdown exits 0 and the lifecycle's exit code is the process's.

Both ways a server can drop a request that a client has already written are avoided:
- closing a kept-alive connection as the client sends on it: after SIGTERM a connection is closed
  by the response that says so, and the connections still idle once the drain is done get until
  --keep-alive-timeout after SIGTERM to be used once more or to expire by uvicorn's keep-alive
  timer, as they would have without the restart; uvicorn's shutdown then closes the rest;
- closing the listening socket while connections wait in its accept queue (the kernel resets
  them): it is closed at SIGTERM, before any response has told a client to reconnect, at a moment
  when the queue is empty. A new connection is refused from then on: nothing was sent, and every
  client and proxy knows such a request can go elsewhere.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from types import FrameType

import uvicorn

from app.lifecycle import Lifecycle

_POLL = 0.05
# The longest wait for an empty accept queue at SIGTERM, polled every millisecond.
_QUIET_WAIT = 1.0
_TCP_LISTEN = 10  # tcp_info.tcpi_state of a listening socket (Linux)


def waiting_to_be_accepted(sockets: list[socket.socket]) -> int:
    """Connections the kernel has set up on these listening sockets that the server has not accepted
    yet. Linux reports them in a listening socket's TCP_INFO (tcpi_unacked, the 32-bit field at
    offset 24); elsewhere this says 0."""
    waiting = 0
    for sock in sockets:
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        except (AttributeError, OSError):  # not Linux, or not TCP (a Unix socket)
            return 0
        if info[0] == _TCP_LISTEN:
            waiting += struct.unpack_from("I", info, 24)[0]
    return waiting


class Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signals = 0
        self._draining_since = 0.0
        self._stopping_to_accept: asyncio.Future[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler runs between two bytecodes of the loop's thread: hand the work to the loop.
        if self._loop is None:  # before the loop runs there is nothing to drain
            self.should_exit = True
            return
        self._loop.call_soon_threadsafe(self._on_signal)

    def _on_signal(self) -> None:
        self._signals += 1
        if self._signals == 1:
            self._draining_since = asyncio.get_running_loop().time()
            self._stopping_to_accept = asyncio.ensure_future(self._stop_accepting_then_drain())
        else:
            self.lifecycle.shutdown()

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        stopper = asyncio.ensure_future(self._stop_when_the_app_stops())
        try:
            await super().serve(sockets)
        finally:
            stopper.cancel()
            if self._stopping_to_accept is not None:
                self._stopping_to_accept.cancel()

    async def _stop_accepting_then_drain(self) -> None:
        # The drain, which tells clients to reconnect, starts once the listening socket is closed: a
        # client reconnecting at once would otherwise find it still open, and keep its queue full.
        loop = asyncio.get_running_loop()
        listening = [sock for server in self.servers for sock in server.sockets]
        until = loop.time() + _QUIET_WAIT
        while waiting_to_be_accepted(listening) and loop.time() < until and self._signals == 1:
            await asyncio.sleep(0.001)  # the loop accepts them meanwhile
        for server in self.servers:
            server.close()  # uvicorn's shutdown closes it again, harmlessly
        self.lifecycle.shutdown()

    async def _stop_when_the_app_stops(self) -> None:
        await self.lifecycle.stopped.wait()
        if self.lifecycle.exit_code == 0:  # drained; a dead engine stops the service at once
            await self._connections_closed(until=self._draining_since + self.config.timeout_keep_alive)
        self.should_exit = True

    async def _connections_closed(self, until: float) -> None:
        """Wait until no connection is open, `until` (loop time) passes, or a second signal comes.
        uvicorn keeps no event for its connections' ends; it polls them in its shutdown too."""
        loop = asyncio.get_running_loop()
        while self.server_state.connections and loop.time() < until and self._signals == 1:
            await asyncio.sleep(_POLL)
