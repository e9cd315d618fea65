"""HTTP/1.1 over plain TCP for http:// upstreams without a proxy: the path every vLLM call on one host
or cluster takes, so the one where the client's latency at concurrency 1 shows (bench/README.md,
"The upstream client"). https and proxied upstreams go through aiohttp (upstream_client.py).

Rules it keeps, as aiohttp does for the other upstreams:
- A keep-alive pool: the most recently used idle connection is reused (O(1)); idle ones are dropped
  after `keepalive_expiry`; at most `max_connections` are open.
- A request goes out in ONE write from the calling task (no writer task, no extra event-loop pass);
  responses are parsed by httptools (llhttp, uvicorn's parser) in protocol callbacks.
- Failures are aiohttp's exception types, so the retry rules and the error mapping treat both paths
  alike: ServerDisconnectedError when the connection ended before the response's head.
- The read timeout bounds each wait for bytes; one timer per connection, moved rather than re-made.
- Closing a response before its end closes its connection (an upstream vLLM aborts the request).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import httptools
from aiohttp.client_reqrep import ConnectionKey
from yarl import URL

# Past this much unread response body, stop reading the socket until the consumer catches up.
_HIGH_WATER = 1 << 20


class _Connection(asyncio.Protocol):
    """One keep-alive connection and the response it is receiving."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.single_use = False
        self.idle_since = 0.0
        # One timer per connection, moved only when it fires before the deadline: a timer set and
        # cancelled around every wait would cost that once per streamed token.
        self.deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.reset()

    def reset(self) -> None:
        self.status = 0
        self.reason = b""
        self.has_length = False
        self.body: list[bytes] = []
        self.buffered = 0
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.error: aiohttp.ClientError | None = None
        self.waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(aiohttp.ClientPayloadError(f"invalid HTTP response from the upstream ({exc})"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_timer()
        if self.headers_done and not self.has_length and not self.complete and exc is None:
            self.complete = True  # a body delimited by the end of the connection
            self._wake()
        elif not self.headers_done:
            self._fail(aiohttp.ServerDisconnectedError(f"the upstream closed the connection ({exc})" if exc
                                                       else "the upstream closed the connection"))
        elif not self.complete:
            self._fail(aiohttp.ClientPayloadError("the upstream closed the connection before the response's end"
                                                  + (f" ({exc})" if exc else "")))

    # httptools callbacks
    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self.has_length = True

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True
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

    def _fail(self, error: aiohttp.ClientError) -> None:
        self.error = error
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(error)

    async def wait(self, timeout: float | None) -> None:
        """Until the parser has news; aiohttp.SocketTimeoutError after `timeout` seconds without any."""
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
            waiter.set_exception(aiohttp.SocketTimeoutError("no data from the upstream within the read timeout"))

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def take_body(self) -> bytes:
        data = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.body.clear()
        if self.buffered > _HIGH_WATER and self.transport is not None:
            self.transport.resume_reading()
        self.buffered = 0
        return data

    def reusable(self) -> bool:
        return (self.complete and self.keep_alive and not self.single_use and not self.closed and self.error is None
                and not self.body)

    def close(self) -> None:
        self.closed = True
        self._stop_timer()
        if self.transport is not None:
            self.transport.close()


class PlainContent:
    """A response's body as aiohttp's StreamReader offers the part the backend reads."""

    def __init__(self, response: PlainResponse) -> None:
        self._response = response

    async def iter_any(self) -> AsyncIterator[bytes]:
        """Each piece as it arrives (what arrived since the last one, joined)."""
        connection = self._response.connection
        while True:
            if connection.body:
                yield connection.take_body()
            elif connection.complete:
                return
            else:
                await connection.wait(self._response.read_timeout)

    async def read(self, n: int = -1) -> bytes:
        """The body, or its first `n` bytes when n >= 0 (the rest is left unread)."""
        connection = self._response.connection
        while not connection.complete and (n < 0 or connection.buffered < n):
            await connection.wait(self._response.read_timeout)
        data = connection.take_body()
        return data if n < 0 else data[:n]


class PlainResponse:
    """A response whose head has arrived: the part of aiohttp.ClientResponse the backend uses."""

    def __init__(self, pool: PlainHTTPPool, key: tuple[str, int], connection: _Connection,
                 read_timeout: float | None) -> None:
        self._pool = pool
        self._key = key
        self.connection = connection
        self.read_timeout = read_timeout
        self.status = connection.status
        self.reason: str | None = connection.reason.decode("latin-1")
        self.content = PlainContent(self)
        self._done = False

    async def read(self) -> bytes:
        return await self.content.read()

    def release(self) -> None:
        """Back to the pool when the body was read to its end, else closed."""
        if not self._done:
            self._done = True
            self._pool.release(self._key, self.connection)

    def close(self) -> None:
        """Close the connection (whatever was read): the upstream sees the disconnect."""
        if not self._done:
            self.connection.close()
            self.release()


class PlainHTTPPool:
    """The pool of plain-HTTP connections, by (host, port)."""

    def __init__(self, *, max_connections: int, keepalive_expiry: float) -> None:
        self._keepalive_expiry = keepalive_expiry
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self._slots = asyncio.Semaphore(max_connections)

    async def _acquire(self, key: tuple[str, int], pool_timeout: float | None, connect_timeout: float | None,
                       fresh: bool) -> _Connection:
        if self._slots.locked():  # every connection busy: wait for one, as long as aiohttp's `connect` timeout
            try:
                async with asyncio.timeout(pool_timeout):
                    await self._slots.acquire()
            except TimeoutError:
                raise aiohttp.ConnectionTimeoutError("no upstream connection free in time") from None
        else:
            await self._slots.acquire()
        try:
            loop = asyncio.get_running_loop()
            idle = self._idle.get(key)
            now = loop.time()
            while idle and not fresh:
                connection = idle.pop()
                if not connection.closed and now - connection.idle_since < self._keepalive_expiry:
                    connection.reset()
                    self._busy.add(connection)
                    return connection
                connection.close()
            try:
                async with asyncio.timeout(connect_timeout):
                    _, connection = await loop.create_connection(lambda: _Connection(loop), key[0], key[1])
            except TimeoutError:
                raise aiohttp.ConnectionTimeoutError(f"connecting to {key[0]}:{key[1]} timed out") from None
            except OSError as exc:
                raise aiohttp.ClientConnectorError(ConnectionKey(key[0], key[1], False, True, None, None, None),
                                                   exc) from exc
            connection.single_use = fresh
            self._busy.add(connection)
            return connection
        except BaseException:
            self._slots.release()
            raise

    def release(self, key: tuple[str, int], connection: _Connection) -> None:
        self._busy.discard(connection)
        if connection.reusable():
            connection.idle_since = asyncio.get_running_loop().time()
            self._idle.setdefault(key, []).append(connection)
        else:
            connection.close()
        self._slots.release()

    async def open(self, method: str, url: URL, headers: dict[str, str], body: bytes | None, *,
                   read_timeout: float | None, pool_timeout: float | None, connect_timeout: float | None,
                   fresh: bool) -> PlainResponse:
        """Send one request (Host and Content-Length added) and wait for the response's head.
        `fresh`: on a new connection, closed after this exchange (as aiohttp's force_close): the retry
        of a call whose pooled connection dropped must not land on a connection that may drop again."""
        assert url.host is not None
        key = (url.host, url.port or 80)
        head = [f"{method} {url.raw_path_qs} HTTP/1.1\r\nHost: {url.host_port_subcomponent}\r\n".encode()]
        head.extend(f"{name}: {value}\r\n".encode() for name, value in headers.items())
        if body is not None:
            head.append(b"Content-Length: %d\r\n" % len(body))
        head.append(b"\r\n")
        if body:
            head.append(body)
        connection = await self._acquire(key, pool_timeout, connect_timeout, fresh)
        try:
            assert connection.transport is not None
            if connection.transport.is_closing():
                raise aiohttp.ServerDisconnectedError("the upstream closed the connection")
            connection.transport.write(b"".join(head))
            while not connection.headers_done:
                await connection.wait(read_timeout)
        except BaseException:
            connection.close()
            self.release(key, connection)
            raise
        return PlainResponse(self, key, connection, read_timeout)

    def close(self) -> None:
        """Close every connection, idle or in use (requests in flight fail)."""
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
        for connection in list(self._busy):
            connection.close()
            connection._fail(aiohttp.ClientConnectionError("the upstream client was closed"))
