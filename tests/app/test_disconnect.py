"""A client that leaves mid-request cancels the pipeline (and so the backend's requests)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from app.cancellation import ClientDisconnected, cancel_on_disconnect
from tests.fakes import ScriptedBackend, chat_body


async def call_and_leave(app: Any, body: dict[str, Any], leave_after: float) -> list[dict[str, Any]]:
    """Drive the ASGI app by hand: send the request, then disconnect after `leave_after` seconds."""
    raw = json.dumps(body).encode()
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "query_string": b"", "root_path": "", "server": ("t", 80), "client": ("c", 1),
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]}
    messages = [{"type": "http.request", "body": raw, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.sleep(leave_after)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), timeout=5)
    return sent


async def test_streaming_client_leaving_during_drafts_cancels_them(
        app_factory: Any, backend: ScriptedBackend) -> None:
    backend.delay = 30  # drafts that would take far longer than the test
    app = app_factory()
    sent = await call_and_leave(app, chat_body(stream=True), leave_after=0.1)
    assert backend.cancelled == 1 and len(backend.calls) == 1
    assert sent[0]["status"] == 200
    assert app.state.chat.admission.active == 0  # the slot came back
    metrics = app.state.metrics.render().decode()
    assert 'aft_requests_total{status="disconnected",stream="true"} 1.0' in metrics


async def test_non_streaming_client_leaving_cancels_the_pipeline(
        app_factory: Any, backend: ScriptedBackend) -> None:
    backend.delay = 30
    app = app_factory()
    sent = await call_and_leave(app, chat_body(), leave_after=0.1)
    assert backend.cancelled == 1
    assert sent[0]["status"] == 499  # for the access log: nobody reads it
    assert app.state.chat.admission.active == 0
    metrics = app.state.metrics.render().decode()
    assert 'aft_requests_total{status="disconnected",stream="false"} 1.0' in metrics


class _Client:
    """An ASGI `receive` that says disconnect when told to."""

    def __init__(self) -> None:
        self.leave = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.leave.wait()
        return {"type": "http.disconnect"}


async def test_work_runs_in_the_callers_task_and_its_result_comes_back() -> None:
    caller = asyncio.current_task()

    async def work() -> Any:
        return asyncio.current_task()

    assert await cancel_on_disconnect(_Client().receive, work()) is caller  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert [t for t in asyncio.all_tasks() if t is not caller] == []  # the watcher is gone


async def test_a_disconnect_cancels_the_work_and_raises_client_disconnected() -> None:
    client, cancelled = _Client(), asyncio.Event()

    async def work() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    asyncio.get_running_loop().call_later(0.01, client.leave.set)
    with pytest.raises(ClientDisconnected):
        await cancel_on_disconnect(client.receive, work())  # type: ignore[arg-type]
    task = asyncio.current_task()
    assert cancelled.is_set() and task is not None and task.cancelling() == 0


async def test_a_cancellation_from_elsewhere_is_not_a_disconnect() -> None:
    async def handler() -> None:
        await cancel_on_disconnect(_Client().receive, asyncio.sleep(30))  # type: ignore[arg-type]

    task = asyncio.ensure_future(handler())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
