"""Scripted HTTP/1.1 servers on loopback, for the upstream client's tests.

`serving(reply)` hands each raw request to `reply`, which writes whatever bytes the test needs
(or closes the connection); `upstream(handler)` answers each request as `handler` says, with
httpx's request and response objects as the vocabulary, the way httpx.MockTransport would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from ssl import SSLContext

import httpx

Reply = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]
Handler = Callable[[httpx.Request], httpx.Response]


class Server:
    """Reads one request head + Content-Length body at a time and lets `reply` answer it."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed = asyncio.Event()
        """Set when a client closed a connection (the server read its end)."""
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while not writer.is_closing():
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                await self.reply(request, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed.set()
        finally:
            writer.close()
            self._writers.discard(writer)

    def stop(self) -> None:
        """Drop every connection still open, so that its handler ends."""
        for writer in list(self._writers):
            writer.transport.abort()


@contextlib.asynccontextmanager
async def serving(reply: Reply, ssl: SSLContext | None = None) -> AsyncIterator[Server]:
    server = Server(reply)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=ssl)
    server.port = listener.sockets[0].getsockname()[1]
    async with listener:
        try:
            yield server
        finally:
            server.stop()


def _request(raw: bytes, base: str) -> httpx.Request:
    head, _, body = raw.partition(b"\r\n\r\n")
    request_line, *lines = head.decode().split("\r\n")
    method, target, _ = request_line.split(" ")
    headers = [tuple(line.split(": ", 1)) for line in lines]
    url = target if target.startswith("http") else base + target  # a proxy is sent the absolute URL
    return httpx.Request(method, url, headers=headers, content=body)


async def write_response(response: httpx.Response, writer: asyncio.StreamWriter) -> None:
    """`response` on the wire: its body in one piece when it has been read, else chunked, piece by piece
    as its stream yields them."""
    head = b"HTTP/1.1 %d %s\r\n" % (response.status_code, response.reason_phrase.encode())
    if isinstance(response.stream, httpx.ByteStream):
        content = await response.aread()
        writer.write(head + b"content-length: %d\r\n\r\n%s" % (len(content), content))
        return
    writer.write(head + b"content-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
    async for part in response.aiter_raw():
        writer.write(b"%x\r\n%s\r\n" % (len(part), part))
        await writer.drain()
    writer.write(b"0\r\n\r\n")


@contextlib.asynccontextmanager
async def upstream(handler: Handler) -> AsyncIterator[Server]:
    """A server that answers each request with `handler(request)`; a handler that raises closes the
    connection without an answer."""
    async def reply(raw: bytes, writer: asyncio.StreamWriter) -> None:
        try:
            response = handler(_request(raw, server.url))
        except Exception:
            writer.close()
            return
        await write_response(response, writer)

    async with serving(reply) as server:
        yield server
