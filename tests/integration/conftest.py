"""Fixtures of the integration tests that run `aft serve --backend openai` over the scripted tool model
(tests/tool_upstream.py): one upstream and one service per test module."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from scripts.launch import aft_serve_command, free_port, running
from tests.scripted_http import upstream
from tests.tool_upstream import ToolModel


@pytest.fixture(scope="module")
def scripted_upstream() -> Iterator[str]:
    """The scripted model on loopback, on its own event loop in a thread; yields its /v1 URL."""
    loop = asyncio.new_event_loop()
    started: asyncio.Future[str] = loop.create_future()
    stopping = asyncio.Event()

    async def serve() -> None:
        async with upstream(ToolModel()) as server:
            started.set_result(server.url + "/v1")
            await stopping.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    url = asyncio.run_coroutine_threadsafe(asyncio.wait_for(asyncio.shield(started), 10), loop).result()
    yield url
    loop.call_soon_threadsafe(stopping.set)
    thread.join(10)


@pytest.fixture(scope="module")
def openai_service(scripted_upstream: str, request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`aft serve --backend openai` over `scripted_upstream`, tools parsed; yields its /v1 URL."""
    port = free_port()
    command = aft_serve_command(port, "--backend", "openai", "--upstream-url", scripted_upstream, "--model", "m",
                                "--served-model-name", "aft", "--enable-auto-tool-choice")
    log = tmp_path_factory.mktemp(f"aft-{request.module.__name__.rsplit('.', 1)[-1]}-openai") / "server.log"
    with running(command, f"http://127.0.0.1:{port}/health", log, timeout=60):
        yield f"http://127.0.0.1:{port}/v1"
