"""The soak's verdicts, against the stub itself (an OpenAI-compatible server) with its faults."""

from __future__ import annotations

import random

import httpx
import pytest

from bench.soak_client import chat_request, send
from bench.stub import Faults
from scripts.launch import free_port
from tests.bench.test_stub_faults import stub


async def verdict(faults: Faults, stream: bool, timeout: float = 10.0, port: int | None = None) -> tuple[str, str]:
    body = {**chat_request(random.Random(0), 0), "stream": stream}
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits) as client:
        if port is not None:
            outcome = await send(client, f"http://127.0.0.1:{port}/v1/chat/completions", body, timeout, 0.0)
        else:
            async with stub(faults) as stub_port:
                outcome = await send(client, f"http://127.0.0.1:{stub_port}/v1/chat/completions", body, timeout, 0.0)
    assert outcome.stream == stream
    return outcome.kind, outcome.detail


@pytest.mark.parametrize("stream", [False, True])
async def test_answers_errors_and_losses_are_told_apart(stream: bool) -> None:
    assert (await verdict(Faults(), stream))[0] == "answered"
    assert await verdict(Faults(error_every=1), stream) == ("clean_error", "502 server_error None")
    kind, detail = await verdict(Faults(drop_every=1), stream)
    assert kind == "lost" and "0 bytes received" in detail
    assert (await verdict(Faults(cut_every=1), stream))[0] == "lost"
    kind, detail = await verdict(Faults(slow_every=1, slow_ms=2000), stream, timeout=0.5)
    assert kind == "hung" and "no end within" in detail


async def test_a_closed_port_is_refused() -> None:
    assert await verdict(Faults(), False, port=free_port()) == ("refused", "connection refused")
