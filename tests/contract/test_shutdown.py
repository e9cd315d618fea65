"""SIGTERM under load, the soak's one loss reduced to a test: a connection the service accepted just
before SIGTERM, whose request arrives just after, must get an answer or an OpenAI-shaped error
(issue 11: "new requests get 503"), not a closed connection; and the process then exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
from pathlib import Path

import pytest

from bench.restartable import Restartable
from bench.run import TIMING, gateway_command, stub_command
from bench.shape import json_error_problem
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
