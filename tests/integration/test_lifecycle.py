"""`aft serve` as an orchestrator sees it: SIGTERM drains and exits 0 (a dead engine exits 1:
tests/integration/test_engine_death.py).

The shutdown test runs the service in front of the benchmarks' stub upstream (bench/stub.py), slow
enough that one answer outlives the shutdown timeout and another does not."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.run import stub_command
from scripts.launch import aft_serve_command, free_port, running

pytestmark = pytest.mark.integration


class Stream:
    """A streamed answer read in the background; `started` once its first token arrived."""

    def __init__(self, client: httpx.AsyncClient, max_tokens: int) -> None:
        self.started = asyncio.Event()
        self.events: list[str] = []
        self.task = asyncio.ensure_future(self._read(client, max_tokens))

    async def _read(self, client: httpx.AsyncClient, max_tokens: int) -> None:
        body = {"model": "aft", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                "max_tokens": max_tokens, "aft": {"rounds": 0}}
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    self.events.append(line[len("data: "):])
                    if '"content":" ' in line:
                        self.started.set()

    def errors(self) -> list[dict[str, Any]]:
        return [json.loads(e)["error"] for e in self.events if e.startswith('{"error"')]


def clean(log: Path) -> str:
    text = log.read_text(errors="replace")
    assert "Traceback" not in text and " ERROR " not in text, text[-3000:]
    return text


async def test_sigterm_drains_then_ends_the_streams_left_and_exits_0(tmp_path: Path) -> None:
    stub_port, port = free_port(), free_port()
    # 50 ms a token: 8 tokens end within the shutdown timeout, 400 do not.
    stub = stub_command(stub_port, {"ttft_ms": 50, "tpot_ms": 50, "tokens": 400}, lifetime=300)
    service = aft_serve_command(port, "--backend", "openai", "--upstream-url", f"http://127.0.0.1:{stub_port}/v1",
                                "--model", "stub", "--served-model-name", "aft", "--shutdown-timeout", "3")
    base = f"http://127.0.0.1:{port}"
    with running(stub, f"http://127.0.0.1:{stub_port}/health", tmp_path / "stub.log", timeout=30), \
            running(service, f"{base}/health", tmp_path / "service.log", timeout=60) as process:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client, \
                httpx.AsyncClient(base_url=base, timeout=10) as prober, \
                httpx.AsyncClient(base_url=base, timeout=10) as other:
            short, long = Stream(client, 8), Stream(client, 400)
            await asyncio.wait_for(asyncio.gather(short.started.wait(), long.started.wait()), 20)
            # Connections opened before SIGTERM and kept alive: requests on them get 503 (and close them).
            assert (await prober.get("/health")).status_code == 200 and (await other.get("/health")).status_code == 200
            os.kill(process.pid, signal.SIGTERM)
            await asyncio.sleep(0.5)
            health = await prober.get("/health")
            refused = await other.post("/v1/chat/completions", json={
                "model": "aft", "messages": [{"role": "user", "content": "hi"}]})
            assert health.status_code == 503 and health.headers["connection"] == "close"
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"
            with pytest.raises(httpx.ConnectError):  # the server stopped accepting at SIGTERM
                await prober.get("/health")
            await asyncio.wait_for(asyncio.gather(short.task, long.task), 20)
        returncode = await asyncio.to_thread(process.wait, 30)
    assert short.errors() == [] and short.events[-1] == "[DONE]"
    assert [e["code"] for e in long.errors()] == ["shutting_down"] and long.events[-1] == "[DONE]"
    assert returncode == 0
    clean(tmp_path / "service.log")

