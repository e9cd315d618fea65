"""SIGTERM under load, as clients see it: a connection the service accepted just before SIGTERM, whose
request arrives just after, must get an answer or an OpenAI-shaped error (issue 11: "new requests
get 503"), not a closed connection; clients sending on kept-alive connections get a response to
every request (issue 24); and the process then exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from bench.restartable import Restartable
from bench.run import TIMING, gateway_command, stub_command
from bench.shape import completion_problem, json_error_problem, judge_stream
from scripts.launch import free_port

BODY = b'{"model":"aft","messages":[{"role":"user","content":"hi"}],"aft":{"proposals":1,"rounds":0}}'
REQUEST = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: aft\r\ncontent-type: application/json\r\n"
           b"content-length: %d\r\n\r\n%s" % (len(BODY), BODY))


@pytest.mark.integration
async def test_a_request_arriving_after_sigterm_on_an_accepted_connection_gets_a_response() -> None:
    logs = Path(tempfile.mkdtemp(prefix="aft-shutdown-"))
    stub_port, port = free_port(), free_port()
    # Every upstream answer takes 3 s, so the service is still draining when the late request arrives.
    stub = Restartable("stub", [*stub_command(stub_port, TIMING, 120), "--slow-every", "1", "--slow-ms", "3000"],
                       f"http://127.0.0.1:{stub_port}/health", logs / "stub.log")
    service = Restartable("service", gateway_command(port, stub_port), f"http://127.0.0.1:{port}/health",
                          logs / "service.log")
    await stub.start(timeout=30)
    try:
        await service.start(timeout=60)
        busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", port)
        busy_writer.write(REQUEST)  # in flight: the drain has something to wait for
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.3)  # both accepted by now; nothing to synchronise on from outside the process
        assert service.pid is not None
        os.kill(service.pid, signal.SIGTERM)
        await asyncio.sleep(0.3)
        writer.write(REQUEST)
        late = await asyncio.wait_for(reader.read(), 30)
        in_flight = await asyncio.wait_for(busy_reader.read(), 30)
        code = await service.wait(30)
    finally:
        await service.kill()
        await stub.kill()
    assert in_flight.startswith(b"HTTP/1.1 200")
    assert late.startswith(b"HTTP/1.1 "), f"the late request got {len(late)} bytes: {late[:100]!r}"
    status = int(late.split(b" ", 2)[1])
    if status != 200:
        assert json_error_problem(late.split(b"\r\n\r\n", 1)[1]) is None
    assert code == 0


@dataclass
class KeptAlive:
    """What one client on kept-alive connections saw: answers, OpenAI errors (status, and whether the
    response said `Connection: close`), and losses (no response, or not a whole one)."""

    answered: int = 0
    errors: list[tuple[int, bool]] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)


async def keep_sending(url: str, seen: KeptAlive, stopping: asyncio.Event, deadline: float) -> None:
    """Chat requests in a loop on a kept-alive connection (aiohttp, no retries: a new connection only
    once the server has closed the old one), until the service refuses the connection."""
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        for number in range(10_000):
            if loop.time() > deadline:
                seen.lost.append("the service still took connections at the test's deadline")
                return
            body = {"model": "aft", "messages": [{"role": "user", "content": f"kept alive {number}"}],
                    "max_tokens": 8, "stream": number % 2 == 1, "aft": {"proposals": 1, "rounds": 0}}
            try:
                async with session.post(url, json=body) as response:
                    payload = await response.read()
                    closes = response.headers.get("connection", "").lower() == "close"
            except aiohttp.ClientConnectorError:  # refused: nothing was sent
                if not stopping.is_set():
                    seen.lost.append("connection refused before SIGTERM")
                return
            except aiohttp.ClientError as exc:
                seen.lost.append(f"{type(exc).__name__}: {exc} (SIGTERM sent: {stopping.is_set()})")
                continue
            if response.status != 200:
                problem = json_error_problem(payload)
                seen.errors.append((response.status, closes)) if problem is None else seen.lost.append(problem)
                continue
            _, problem = judge_stream(payload.decode()) if body["stream"] else (None, completion_problem(payload))
            if problem is not None:
                seen.lost.append(problem)
            seen.answered += problem is None


@pytest.mark.integration
async def test_clients_on_kept_alive_connections_get_a_response_to_every_request_across_sigterm() -> None:
    """Issue 24: a request sent on a kept-alive connection as the service stopped was reset with 0
    bytes, once a client per restart. From SIGTERM on every response says `Connection: close`, and
    connections still idle are closed only later, so every request gets an answer or an error; then
    the port is closed."""
    logs = Path(tempfile.mkdtemp(prefix="aft-keepalive-"))
    stub_port, port = free_port(), free_port()
    stub = Restartable("stub", stub_command(stub_port, TIMING, 120), f"http://127.0.0.1:{stub_port}/health",
                       logs / "stub.log")
    service = Restartable("service", [*gateway_command(port, stub_port), "--shutdown-timeout", "5"],
                          f"http://127.0.0.1:{port}/health", logs / "service.log")
    clients = [KeptAlive() for _ in range(16)]
    stopping = asyncio.Event()
    await stub.start(timeout=30)
    try:
        await service.start(timeout=60)
        deadline = asyncio.get_running_loop().time() + 60
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        sending = asyncio.gather(*(keep_sending(url, seen, stopping, deadline) for seen in clients))
        while sum(seen.answered for seen in clients) < 64:  # every client is busy on its connection
            await asyncio.sleep(0.05)
        assert service.pid is not None
        stopping.set()
        os.kill(service.pid, signal.SIGTERM)
        code = await service.wait(30)
        await asyncio.wait_for(sending, 30)
    finally:
        await service.kill()
        await stub.kill()
    lost = [f"client {i}: {problem}" for i, seen in enumerate(clients) for problem in seen.lost]
    assert lost == [], f"{len(lost)} requests without a response (log: {logs})"
    assert all(seen.answered > 0 for seen in clients)
    refusals = [error for seen in clients for error in seen.errors]
    assert refusals and all(status == 503 and closes for status, closes in refusals), refusals
    assert code == 0
