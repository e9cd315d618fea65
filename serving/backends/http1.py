"""A lean HTTP/1.1 client for plain-HTTP upstreams: keep-alive pool, C parser, no layers.

Why: profiling the gateway under load (bench/README.md) put 30% (16 clients) to 65%
(64 clients) of its CPU in httpx's default transport, httpcore: each request scans
every pooled connection (`_assign_requests_to_connections`, a readability syscall per
idle connection), parses responses with pure-Python h11, and writes headers and body
in two sends through anyio. Here a request takes the most recently used idle connection
in O(1), goes out in one write, and the response is parsed by httptools (llhttp, the
parser uvicorn uses) in asyncio protocol callbacks, with no task or thread per request.
Once that was lean, httpx's own objects around each call (building an httpx.Request,
wrapping the response in httpx.Response and its byte streams) were 20 µs a call: requests
and responses here are bytes and a small HTTP1Response instead.

Errors are httpx's exception types and timeouts its timeout extension's keys, so the
backend treats this client and httpx's transports (https and proxied upstreams, and
httpx.MockTransport in tests) alike.

Cancellation: closing a response before its end (or cancelling the request) closes its
connection, so an upstream vLLM sees the disconnect and aborts the request.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import httptools
import httpx

# Past this much unread response body, stop reading the socket until the consumer catches up.
_HIGH_WATER = 1 << 20


class _Connection(asyncio.Protocol):
    """One keep-alive connection and the response it is receiving."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        # The read timeout: one timer per connection, moved only when it fires before the deadline
        # (a timer set and cancelled around every wait cost ~1 µs, once per streamed token).
        self.deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.buffered = 0
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.until_eof = False
        self.error: httpx.TransportError | None = None
        self.waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"invalid HTTP response from the upstream ({exc})"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.headers_done and self.until_eof and not self.complete and exc is None:
            self.complete = True  # a body delimited by the end of the connection
            self._wake()
        elif not self.complete:
            self._fail(httpx.RemoteProtocolError("the upstream closed the connection without sending a complete "
                                                 "response" + (f" ({exc})" if exc else "")))

    # httptools callbacks
    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True
        names = {name.lower() for name, _ in self.headers}
        self.until_eof = b"content-length" not in names and b"transfer-encoding" not in names
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()  # the parser forgets it once the message is done
        self._wake()

    # the request side
    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _fail(self, error: httpx.TransportError) -> None:
        self.error = error
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(error)

    async def wait(self, timeout: float | None) -> None:
        """Until the parser has news for us; httpx.ReadTimeout after `timeout` seconds without any."""
        if self.error is not None:
            raise self.error
        waiter = self.waiter = self.loop.create_future()
        if timeout is not None:
            self.deadline = self.loop.time() + timeout
            if self.timer is None or self.deadline < self.timer_at:
                self._arm()
        try:
            await waiter
        finally:
            self.waiter = None

    def _arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = self.deadline
        self.timer = self.loop.call_at(self.deadline, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        waiter = self.waiter
        if waiter is None or waiter.done():
            return  # nobody waits: the next wait arms it again
        if self.loop.time() < self.deadline:
            self._arm()  # a later wait moved the deadline: wait for the rest
        else:
            waiter.set_exception(httpx.ReadTimeout("no data from the upstream within the read timeout"))

    def take_body(self) -> bytes:
        data = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.body.clear()
        if self.buffered > _HIGH_WATER and self.transport is not None:
            self.transport.resume_reading()
        self.buffered = 0
        return data

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and self.error is None and not self.body

    def close(self) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.close()


class HTTP1Response:
    """A response whose head has arrived. Read its body with `aread()` (then `content`, `json()`,
    `text`) or `aiter_bytes()`, then `aclose()`: the connection goes back to the pool, or is closed
    when the body was not read to its end. The part of httpx.Response the backend uses, without its
    layers (a headers object, content decoders, stream wrappers, the request object before it)."""

    def __init__(self, transport: HTTP1Transport, key: tuple[str, int], connection: _Connection,
                 timeout: float | None) -> None:
        self.status_code = connection.status
        self.reason_phrase = connection.reason.decode("latin-1")
        self._transport, self._key, self._connection, self._timeout = transport, key, connection, timeout
        self._content: bytes | None = None
        self._released = False

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body as it arrives; read to its end, the connection goes back to the pool (as httpx does)."""
        connection = self._connection
        while True:
            if connection.body:
                yield connection.take_body()
            elif connection.complete:
                self._release()
                return
            else:
                await connection.wait(self._timeout)

    async def aread(self) -> bytes:
        if self._content is None:
            self._content = b"".join([part async for part in self.aiter_bytes()])
        return self._content

    @property
    def content(self) -> bytes:
        if self._content is None:
            raise httpx.ResponseNotRead()
        return self._content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)

    async def aclose(self) -> None:
        self._release()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._transport._release(self._key, self._connection)


class HTTP1Transport:
    """HTTP/1.1 over plain TCP, at most `max_connections` open; idle ones are reused newest first
    and dropped after `keepalive_expiry` seconds (keep it under the upstream's own idle timeout)."""

    def __init__(self, *, max_connections: int = 1024, keepalive_expiry: float = 4.0) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._slots: asyncio.Semaphore | None = None
        self._busy: set[_Connection] = set()

    async def _acquire(self, key: tuple[str, int], timeouts: Mapping[str, float | None]) -> _Connection:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max_connections)
        if self._slots.locked():
            try:
                async with asyncio.timeout(timeouts.get("pool")):
                    await self._slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout("no upstream connection free within the pool timeout") from None
        else:
            await self._slots.acquire()
        try:
            loop = asyncio.get_running_loop()
            idle = self._idle.get(key)
            now = loop.time()
            while idle:
                connection = idle.pop()
                if not connection.closed and now - connection.idle_since < self._keepalive_expiry:
                    connection._reset()
                    self._busy.add(connection)
                    return connection
                connection.close()
            try:
                async with asyncio.timeout(timeouts.get("connect")):
                    _, connection = await loop.create_connection(lambda: _Connection(loop), key[0], key[1])
            except TimeoutError:
                raise httpx.ConnectTimeout(f"connecting to {key[0]}:{key[1]} timed out") from None
            except OSError as exc:
                raise httpx.ConnectError(f"{exc.strerror or exc}") from exc
            self._busy.add(connection)
            return connection
        except BaseException:
            self._slots.release()
            raise

    def _release(self, key: tuple[str, int], connection: _Connection) -> None:
        self._busy.discard(connection)
        if connection.reusable():
            connection.idle_since = asyncio.get_running_loop().time()
            self._idle.setdefault(key, []).append(connection)
        else:
            connection.close()
        if self._slots is not None:
            self._slots.release()

    async def send(self, method: str, url: httpx.URL, headers: Sequence[tuple[bytes, bytes]], body: bytes | None,
                   timeouts: Mapping[str, float | None]) -> HTTP1Response:
        """Send one request (host and content-length headers added) and wait for the response's head.
        `timeouts` as httpx's timeout extension has them: connect, read, pool. Failures are
        httpx.TransportError subclasses, as from httpx's own transports."""
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"HTTP1Transport serves http:// URLs only, not {url.scheme}://")
        key = (url.host, url.port or 80)
        head = [b"%s %s HTTP/1.1\r\nhost: %s\r\n" % (method.encode(), url.raw_path, url.netloc)]
        head.extend(b"%s: %s\r\n" % header for header in headers)
        if body is not None:
            head.append(b"content-length: %d\r\n" % len(body))
        head.append(b"\r\n")
        if body:
            head.append(body)
        connection = await self._acquire(key, timeouts)
        try:
            assert connection.transport is not None
            connection.transport.write(b"".join(head))
            while not connection.headers_done:
                await connection.wait(timeouts.get("read"))
        except BaseException:
            connection.close()
            self._release(key, connection)
            raise
        return HTTP1Response(self, key, connection, timeouts.get("read"))

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
        for connection in list(self._busy):
            connection.close()
