"""HTTP1Transport against scripted HTTP/1.1 servers on loopback."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from serving.backends.http1 import HTTP1Response, HTTP1Transport
from tests.scripted_http import Reply, serving


def ok(body: bytes = b'{"ok":true}', extra: bytes = b"") -> Reply:
    async def reply(_: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body))
    return reply


async def send(transport: HTTP1Transport, port: int, body: bytes | None = b"{}",
               timeout: float | None = 5.0) -> HTTP1Response:
    return await transport.send("POST" if body is not None else "GET", httpx.URL(f"http://127.0.0.1:{port}/v1/x"),
                                [(b"content-type", b"application/json")], body,
                                {"connect": 5.0, "read": timeout, "write": 5.0, "pool": 0.2})


async def test_one_connection_serves_requests_one_after_another() -> None:
    async with serving(ok()) as server:
        transport = HTTP1Transport()
        for _ in range(3):
            response = await send(transport, server.port)
            assert response.status_code == 200 and await response.aread() == b'{"ok":true}'
        assert server.connections == 1  # each body read to its end gave the connection back
        assert server.requests[0] == (b"POST /v1/x HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json\r\n"
                                      b"content-length: 2\r\n\r\n{}" % server.port)
        await (await send(transport, server.port, body=None)).aread()
        get = server.requests[-1]
        assert get.startswith(b"GET /v1/x HTTP/1.1\r\n") and b"content-length" not in get
        await transport.aclose()


async def test_a_response_reads_as_bytes_text_and_json() -> None:
    async with serving(ok(b'{"caf\xc3\xa9": [1]}')) as server:
        transport = HTTP1Transport()
        response = await send(transport, server.port)
        assert (response.status_code, response.reason_phrase) == (200, "OK")
        with pytest.raises(httpx.ResponseNotRead):
            _ = response.content
        assert await response.aread() == response.content == '{"café": [1]}'.encode()
        assert response.text == '{"café": [1]}' and response.json() == {"café": [1]}
        await response.aclose()
        await transport.aclose()


async def test_chunked_body_is_passed_on_as_it_arrives() -> None:
    gate = asyncio.Event()

    async def reply(_: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await gate.wait()
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")

    async with serving(reply) as server:
        transport = HTTP1Transport()
        response = await send(transport, server.port)
        pieces = response.aiter_bytes()
        assert await asyncio.wait_for(anext(pieces), 5) == b"first"
        gate.set()
        assert [p async for p in pieces] == [b"second"]
        await response.aclose()
        await send(transport, server.port)
        assert server.connections == 1
        await transport.aclose()


async def test_closing_a_response_early_closes_its_connection() -> None:
    # What makes an upstream vLLM abort the request.
    async def reply(_: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")

    async with serving(reply) as server:
        transport = HTTP1Transport()
        response = await send(transport, server.port)
        await anext(response.aiter_bytes())
        await response.aclose()
        await asyncio.wait_for(server.closed.wait(), 5)
        response = await send(transport, server.port)
        assert server.connections == 2
        await response.aclose()
        await transport.aclose()


async def test_cancelling_while_waiting_for_the_answer_closes_the_connection() -> None:
    async def silent(_: bytes, __: asyncio.StreamWriter) -> None:
        pass

    async with serving(silent) as server:
        transport = HTTP1Transport()
        task = asyncio.create_task(send(transport, server.port))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(server.closed.wait(), 5)
        await transport.aclose()


async def test_connection_close_and_eof_delimited_bodies_are_not_reused() -> None:
    async def until_eof(_: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nall of it")
        writer.close()

    async with serving(until_eof) as server:
        transport = HTTP1Transport()
        assert await (await send(transport, server.port)).aread() == b"all of it"
        assert await (await send(transport, server.port)).aread() == b"all of it"
        assert server.connections == 2
        await transport.aclose()
    async with serving(ok(extra=b"connection: close\r\n")) as server:
        for _ in range(2):
            await (await send(transport, server.port)).aread()
        assert server.connections == 2
        await transport.aclose()


async def test_idle_connections_closed_by_the_server_or_expired_are_replaced() -> None:
    async with serving(ok()) as server:
        transport = HTTP1Transport(keepalive_expiry=0.05)
        await (await send(transport, server.port)).aread()
        await asyncio.sleep(0.1)
        await (await send(transport, server.port)).aread()
        assert server.connections == 2
        await transport.aclose()


async def test_timeouts_and_refusals_are_httpx_errors() -> None:
    async def silent(_: bytes, __: asyncio.StreamWriter) -> None:
        pass

    async with serving(silent) as server:
        transport = HTTP1Transport()
        with pytest.raises(httpx.ReadTimeout):
            await send(transport, server.port, timeout=0.1)
        port = server.port
    with pytest.raises(httpx.ConnectError):
        await send(transport, port)
    with pytest.raises(httpx.UnsupportedProtocol):
        await transport.send("GET", httpx.URL("https://127.0.0.1/"), [], None, {})
    await transport.aclose()


async def test_the_read_timeout_counts_from_each_wait_on_a_reused_connection() -> None:
    requests = 0

    async def reply(_: bytes, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        requests += 1
        if requests == 1:  # slow pieces, each within the timeout: no timeout, however long the whole
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            for _ in range(4):
                await asyncio.sleep(0.06)
                writer.write(b"1\r\nx\r\n")
            writer.write(b"0\r\n\r\n")
        elif requests == 2:
            await ok()(_, writer)
        # the third gets no answer

    async with serving(reply) as server:
        transport = HTTP1Transport()
        assert await (await send(transport, server.port, timeout=0.1)).aread() == b"xxxx"
        await asyncio.sleep(0.2)  # its timer has run out
        await (await send(transport, server.port, timeout=60)).aread()  # leaves its timer a minute out
        started = asyncio.get_running_loop().time()
        with pytest.raises(httpx.ReadTimeout):
            await send(transport, server.port, timeout=0.1)  # a shorter timeout on the same connection
        assert asyncio.get_running_loop().time() - started < 2
        assert server.connections == 1
        await transport.aclose()


async def test_a_full_pool_waits_then_times_out() -> None:
    async with serving(ok()) as server:
        transport = HTTP1Transport(max_connections=1)
        first = await send(transport, server.port)
        with pytest.raises(httpx.PoolTimeout):
            await send(transport, server.port)  # the pool timeout is 0.2 s
        waiting = asyncio.create_task(send(transport, server.port))
        await asyncio.sleep(0.05)
        await first.aread()  # read to the end: the connection goes back to the pool
        await (await asyncio.wait_for(waiting, 5)).aread()
        assert server.connections == 1
        await transport.aclose()


async def test_a_server_cutting_the_response_short_is_a_protocol_error() -> None:
    async def cut(_: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        writer.close()

    async with serving(cut) as server:
        transport = HTTP1Transport()
        response = await send(transport, server.port)
        with pytest.raises(httpx.RemoteProtocolError):
            await response.aread()
        await transport.aclose()
