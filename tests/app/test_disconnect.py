"""A client that leaves mid-request cancels the pipeline (and so the backend's requests)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.cancellation import ClientDisconnected, cancel_on_disconnect
from tests.app.conftest import ASGIClient, GatedBackend
from tests.fakes import chat_body


async def leave_during_drafts(app: Any, backend: GatedBackend, body: dict[str, Any]) -> ASGIClient:
    backend.held = True  # drafts that never end unless cancelled
    client = ASGIClient(app, body)

    async def leave_once_drafting() -> None:
        await backend.called.wait()
        client.leave.set()

    leaving = asyncio.ensure_future(leave_once_drafting())
    await client.post()
    await leaving
    return client


async def test_streaming_client_leaving_during_drafts_cancels_them(
        app_factory: Any, backend: GatedBackend) -> None:
    app = app_factory()
    client = await leave_during_drafts(app, backend, chat_body(stream=True))
    assert backend.cancelled == 1 and len(backend.calls) == 1
    assert client.status == 200
    assert app.state.lifecycle.in_flight == 0  # the slot came back
    metrics = app.state.metrics.render().decode()
    assert 'aft_requests_total{status="disconnected",stream="true"} 1.0' in metrics


async def test_non_streaming_client_leaving_cancels_the_pipeline(
        app_factory: Any, backend: GatedBackend) -> None:
    app = app_factory()
    client = await leave_during_drafts(app, backend, chat_body())
    assert backend.cancelled == 1
    assert client.status == 499  # for the access log: nobody reads it
    assert app.state.lifecycle.in_flight == 0
    metrics = app.state.metrics.render().decode()
    assert 'aft_requests_total{status="disconnected",stream="false"} 1.0' in metrics


async def test_a_stream_whose_client_left_before_the_response_began_gives_its_slot_back(
        app_factory: Any, backend: GatedBackend) -> None:
    app = app_factory()
    client = ASGIClient(app, chat_body(stream=True))

    def gone(message: dict[str, Any]) -> None:
        raise OSError("the connection is closed")

    client.on_send = gone
    await client.post()  # a write to a closed connection ends the stream quietly
    assert app.state.lifecycle.in_flight == 0
    assert backend.calls == []


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
    await asyncio.sleep(0)  # one pass of the loop: the watcher's cancellation completes
    assert [t for t in asyncio.all_tasks() if t is not caller] == []  # the watcher is gone


async def test_a_disconnect_cancels_the_work_and_raises_client_disconnected() -> None:
    client, started, cancelled = _Client(), asyncio.Event(), asyncio.Event()

    async def work() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def leave_once_started() -> None:
        await started.wait()
        client.leave.set()

    leaving = asyncio.ensure_future(leave_once_started())
    with pytest.raises(ClientDisconnected):
        await cancel_on_disconnect(client.receive, work())  # type: ignore[arg-type]
    await leaving
    task = asyncio.current_task()
    assert cancelled.is_set() and task is not None and task.cancelling() == 0


async def test_a_cancellation_from_elsewhere_is_not_a_disconnect() -> None:
    started = asyncio.Event()

    async def work() -> None:
        started.set()
        await asyncio.Event().wait()

    async def handler() -> None:
        await cancel_on_disconnect(_Client().receive, work())  # type: ignore[arg-type]

    task = asyncio.ensure_future(handler())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
