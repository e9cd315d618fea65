"""The in-process engine's death as a client and an orchestrator see it: every request waiting on the
engine ends at once with a 502 `engine_dead` (a stream: an error event, then `data: [DONE]`), /health
stops answering 200, and `aft serve` exits 1 so that it is restarted.

Deterministic on a loaded host: a request is held in flight by stopping the engine core process
(SIGSTOP) before the request reaches it, and the service's own gauge shows it admitted; a stopped core
cannot finish it, so the kill (SIGKILL) always finds it waiting. The engine core is vLLM's
`VLLM::EngineCore` process; its `VLLM::Worker` child runs the model.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from scripts.launch import CPU_ENGINE_ENV, CPU_ENGINE_FLAGS, aft_serve_command, free_port, running
from tests.prometheus_text import metric_sum

pytestmark = pytest.mark.integration

# Far above what a dead engine may take to show: a request that waits for it was not told.
REQUEST_TIMEOUT = 60
AT_ONCE = 10.0
QUESTION = [{"role": "user", "content": "What is 17 + 25?"}]
SHORT = {"model": "aft", "messages": QUESTION, "max_tokens": 4, "aft": {"rounds": 0}}
# Greedy decoding of the tiny model never meets its end token: 1800 tokens run for seconds.
LONG_STREAM = {"model": "aft", "messages": QUESTION, "max_tokens": 1800, "temperature": 0, "stream": True,
               "aft": {"rounds": 0}}


class Service:
    def __init__(self, base: str, process: subprocess.Popen[bytes], log: Path) -> None:
        self.base, self.process, self.log = base, process, log
        children = psutil.Process(process.pid).children(recursive=True)
        cores = [p for p in children if "EngineCore" in p.name()]
        assert len(cores) == 1, [p.name() for p in children]
        self.core = cores[0]

    async def in_flight(self, client: httpx.AsyncClient, count: int) -> None:
        """Wait until the service has admitted `count` requests (its own gauge moves at once)."""
        deadline = time.monotonic() + 60
        while True:
            text = (await client.get("/metrics")).text
            admitted = metric_sum(text, "aft_requests_in_flight")
            if admitted >= count:
                return
            assert time.monotonic() < deadline, f"{admitted} of {count} requests admitted"
            await asyncio.sleep(0.05)

    def exits_after_the_death(self) -> None:
        """/health no longer 200, the process exits 1, and the log says why without a traceback of ours."""
        with suppress(httpx.TransportError):  # or the process is gone already
            assert httpx.get(f"{self.base}/health", timeout=10).status_code != 200
        assert self.process.wait(60) == 1
        text = self.log.read_text(errors="replace")
        assert "the engine died" in text
        # vLLM logs the death with its own traceback; none may come from the service's code.
        root = Path(__file__).resolve().parents[2]
        assert f'File "{root / "app"}' not in text and f'File "{root / "serving"}' not in text, text[-5000:]


@contextmanager
def service(tiny_model: Path, tmp_path: Path) -> Iterator[Service]:
    port = free_port()
    command = aft_serve_command(port, "--backend", "vllm", "--model", str(tiny_model), "--served-model-name", "aft",
                                "--request-timeout", str(REQUEST_TIMEOUT), *CPU_ENGINE_FLAGS)
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "service.log"
    with running(command, f"{base}/health", log, env=CPU_ENGINE_ENV) as process:
        yield Service(base, process, log)


def assert_engine_dead(response: httpx.Response, since: float) -> None:
    assert response.status_code == 502 and response.json()["error"]["code"] == "engine_dead", response.text
    assert time.monotonic() - since < AT_ONCE


async def test_the_next_request_after_an_idle_engine_died_gets_502_at_once(tiny_model: Path, tmp_path: Path) -> None:
    with service(tiny_model, tmp_path) as s:
        async with httpx.AsyncClient(base_url=s.base, timeout=REQUEST_TIMEOUT + 30) as client:
            assert (await client.post("/v1/chat/completions", json=SHORT)).status_code == 200
            s.core.kill()
            await asyncio.to_thread(s.core.wait, 30)
            killed = time.monotonic()
            assert_engine_dead(await client.post("/v1/chat/completions", json=SHORT), killed)
        s.exits_after_the_death()


async def read_stream(client: httpx.AsyncClient, first_token: asyncio.Event) -> list[dict[str, Any]]:
    """A streamed answer's events; `first_token` is set once text arrived."""
    events = []
    async with client.stream("POST", "/v1/chat/completions", json=LONG_STREAM) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            event = {"done": True} if line == "data: [DONE]" else json.loads(line[len("data: "):])
            events.append(event)
            if any(c.get("delta", {}).get("content") for c in event.get("choices", [])):
                first_token.set()
    return events


async def test_requests_in_flight_when_the_engine_dies_end_at_once(tiny_model: Path, tmp_path: Path) -> None:
    with service(tiny_model, tmp_path) as s:
        async with httpx.AsyncClient(base_url=s.base, timeout=REQUEST_TIMEOUT + 30) as client:
            first_token = asyncio.Event()
            stream = asyncio.ensure_future(read_stream(client, first_token))
            await asyncio.wait_for(first_token.wait(), 60)
            s.core.suspend()  # from here on nothing in flight can finish
            assert not stream.done(), "the stream ended before the engine was stopped"
            answer = asyncio.ensure_future(client.post("/v1/chat/completions", json=SHORT))
            await s.in_flight(client, 2)
            s.core.kill()
            killed = time.monotonic()
            assert_engine_dead(await answer, killed)
            events = await asyncio.wait_for(stream, AT_ONCE)
        assert [e["error"]["code"] for e in events if "error" in e] == ["engine_dead"]
        assert events[-1] == {"done": True}
        s.exits_after_the_death()


async def test_the_first_request_waiting_on_an_engine_that_dies_gets_502_at_once(
        tiny_model: Path, tmp_path: Path) -> None:
    # The first request of a fresh engine asks the engine core which tasks it supports, and vLLM's
    # AsyncLLM does not fail that question when the core dies: without a watchdog of the service's own,
    # this request waited for --request-timeout (a 504) and the dead service stayed up.
    with service(tiny_model, tmp_path) as s:
        async with httpx.AsyncClient(base_url=s.base, timeout=REQUEST_TIMEOUT + 30) as client:
            s.core.suspend()
            answer = asyncio.ensure_future(client.post("/v1/chat/completions", json=SHORT))
            await s.in_flight(client, 1)
            # Admitted, the request reaches the engine within milliseconds (it is only tokenized on the
            # way); the second makes sure it waits there, not in front of it, when the core dies.
            await asyncio.sleep(1)
            s.core.kill()
            killed = time.monotonic()
            assert_engine_dead(await answer, killed)
        s.exits_after_the_death()
