"""The stub's fault injection (bench/soak.py's upstream faults): each fault does what it says, and
only to the requests it is set for."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import pytest

from bench.client import Connection, HTTPError, get_json_bytes
from bench.stub import Faults, Timing
from tests.bench.inprocess import stub as stub_with

FAST = Timing(ttft=0.001, tpot=0.001, tokens=8)
CHAT = "/v1/chat/completions"


def body(stream: bool) -> bytes:
    return json.dumps({"model": "stub", "messages": [{"role": "user", "content": "hi"}], "stream": stream}).encode()


@contextlib.asynccontextmanager
async def stub(faults: Faults) -> AsyncIterator[int]:
    async with stub_with(FAST, faults) as port:
        yield port


async def faults_injected(port: int) -> dict[str, int]:
    stats: dict[str, int] = json.loads(await get_json_bytes(port, "/stats"))["faults"]
    return stats


async def test_no_faults_by_default() -> None:
    async with stub(Faults()) as port:
        connection = Connection(port)
        for stream in (False, True, False):
            status, _ = await connection.request("POST", CHAT, body(stream))
            assert status == 200
        connection.close()
        assert await faults_injected(port) == {}


@pytest.mark.parametrize("stream", [False, True])
async def test_every_second_request_gets_an_openai_shaped_5xx_and_the_connection_stays(stream: bool) -> None:
    async with stub(Faults(error_every=2)) as port:
        connection = Connection(port)
        statuses = []
        for _ in range(4):
            status, data = await connection.request("POST", CHAT, body(stream))
            statuses.append(status)
            if status >= 500:
                assert set(json.loads(data)["error"]) == {"message", "type", "param", "code"}
        connection.close()
        assert statuses[0] == statuses[2] == 200 and statuses[1] >= 500 and statuses[3] >= 500
        assert await faults_injected(port) == {"error": 2}


async def test_a_dropped_request_gets_no_byte_of_a_response() -> None:
    async with stub(Faults(drop_every=1)) as port:
        connection = Connection(port)
        with pytest.raises(HTTPError, match="before the response"):
            await connection.request("POST", CHAT, body(False))
        assert await faults_injected(port) == {"drop": 1}


@pytest.mark.parametrize("stream", [False, True])
async def test_a_cut_response_ends_halfway(stream: bool) -> None:
    received: list[bytes] = []
    async with stub(Faults(cut_every=1)) as port:
        connection = Connection(port)
        with pytest.raises(HTTPError, match="mid-response"):
            await connection.request("POST", CHAT, body(stream), on_data=received.append)
        stats = json.loads(await get_json_bytes(port, "/stats"))
    assert stats["faults"] == {"cut": 1} and stats["cancelled"] == 0 and stats["completed"] == 0
    if stream:  # the role chunk and half of the tokens, no [DONE]
        text = b"".join(received)
        assert text.count(b'"content":" t') == FAST.tokens // 2 and b"[DONE]" not in text


async def test_a_slow_response_starts_late() -> None:
    async with stub(Faults(slow_every=2, slow_ms=300)) as port:
        connection = Connection(port)
        took = []
        for _ in range(2):
            start = time.monotonic()
            status, _ = await connection.request("POST", CHAT, body(True))
            took.append(time.monotonic() - start)
            assert status == 200
        connection.close()
    assert took[0] < 0.3 <= took[1]


async def test_close_after_ends_the_connection_after_a_complete_unannounced_response() -> None:
    async with stub(Faults(close_every=1)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        data = body(False)
        writer.write(b"POST %s HTTP/1.1\r\ncontent-length: %d\r\n\r\n%s" % (CHAT.encode(), len(data), data))
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.startswith(b"content-length")))
        assert b"connection: keep-alive" in head
        assert json.loads(await reader.readexactly(length))["choices"]
        assert await reader.read() == b""  # then the stub closes it
        writer.close()
        assert await faults_injected(port) == {"close": 1}
