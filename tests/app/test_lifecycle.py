"""Deadlines, the drain on shutdown, and a dead engine, as a client sees them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from serving.errors import EngineDead
from tests.app.conftest import ASGIClient, GatedBackend
from tests.fakes import chat_body


def error_events(body: bytes) -> tuple[list[dict[str, Any]], str]:
    """The error objects of a stream's events, and its last event."""
    events = [e for e in body.decode().split("\n\n") if e.startswith("data: ")]
    errors = [json.loads(e[6:])["error"] for e in events[:-1] if '"error"' in e]
    return errors, events[-1]


async def test_a_request_past_its_deadline_is_504(app_factory: Any, backend: GatedBackend) -> None:
    backend.held = True  # drafts that never end
    app = app_factory(request_timeout=0.05)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.post("/v1/chat/completions", json=chat_body())
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "request_timeout"
    assert backend.cancelled == 1 and app.state.lifecycle.in_flight == 0


async def test_a_stream_past_its_deadline_ends_with_an_error_event_then_done(
        app_factory: Any, backend: GatedBackend) -> None:
    backend.held = True
    app = app_factory(request_timeout=0.05)
    client = ASGIClient(app, chat_body(stream=True))
    await client.post()
    errors, last = error_events(client.body)
    assert [e["code"] for e in errors] == ["request_timeout"] and last == "data: [DONE]"
    assert backend.cancelled == 1 and app.state.lifecycle.in_flight == 0
    assert 'aft_requests_total{status="504",stream="true"} 1.0' in app.state.metrics.render().decode()


async def test_shutdown_refuses_new_work_and_lets_requests_in_flight_finish(
        app_factory: Any, backend: GatedBackend) -> None:
    backend.held = True
    app = app_factory(shutdown_timeout=60)
    lifecycle = app.state.lifecycle
    client = ASGIClient(app, chat_body(stream=True))
    streaming = asyncio.ensure_future(client.post())
    await backend.called.wait()
    lifecycle.shutdown()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        health = await c.get("/health")
        refused = await c.post("/v1/chat/completions", json=chat_body())
    assert health.status_code == 503 and refused.status_code == 503
    assert refused.json()["error"]["code"] == "shutting_down" and refused.headers["retry-after"] == "1"
    assert not lifecycle.stopped.is_set()
    backend.go.set()  # the request in flight finishes within the timeout
    await streaming
    await lifecycle.stopped.wait()
    errors, last = error_events(client.body)
    assert errors == [] and last == "data: [DONE]" and lifecycle.exit_code == 0


async def test_past_the_shutdown_timeout_requests_end_with_an_error(app_factory: Any,
                                                                    backend: GatedBackend) -> None:
    backend.held = True  # never finishes by itself
    app = app_factory(shutdown_timeout=0.05)
    lifecycle = app.state.lifecycle
    stream = ASGIClient(app, chat_body(stream=True))
    plain = asyncio.ensure_future(
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t").post(
            "/v1/chat/completions", json=chat_body()))
    streaming = asyncio.ensure_future(stream.post())
    while len(backend.calls) < 2:
        backend.called.clear()
        await backend.called.wait()
    lifecycle.shutdown()
    await lifecycle.stopped.wait()
    await streaming
    errors, last = error_events(stream.body)
    assert [e["code"] for e in errors] == ["shutting_down"] and last == "data: [DONE]"
    response = await plain
    assert response.status_code == 503 and response.json()["error"]["code"] == "shutting_down"
    assert backend.cancelled == 2 and lifecycle.in_flight == 0 and lifecycle.exit_code == 0


async def test_a_dead_engine_fails_requests_and_health_and_stops_the_service_with_an_error(
        client: httpx.AsyncClient, backend: GatedBackend) -> None:
    backend.fail_on_call, backend.error = 1, EngineDead("the engine died", detail="EngineDeadError: core gone")
    response = await client.post("/v1/chat/completions", json=chat_body())
    assert response.status_code == 502 and "core gone" not in response.text
    lifecycle = client._transport.app.state.lifecycle  # type: ignore[attr-defined]
    assert lifecycle.stopped.is_set() and lifecycle.exit_code == 1
    assert (await client.get("/health")).status_code == 502
    assert (await client.post("/v1/chat/completions", json=chat_body())).status_code == 502


async def test_an_engine_dying_mid_stream_stops_the_service(app_factory: Any, backend: GatedBackend) -> None:
    backend.fail_on_call, backend.error = 2, EngineDead("the engine died")
    app = app_factory()
    client = ASGIClient(app, chat_body(stream=True))
    await client.post()
    errors, last = error_events(client.body)
    assert [e["code"] for e in errors] == [None] and last == "data: [DONE]"
    assert app.state.lifecycle.exit_code == 1


def test_the_engines_death_is_engine_dead() -> None:
    pytest.importorskip("vllm")
    from vllm.v1.engine.exceptions import EngineDeadError

    from serving.backends.vllm_engine import engine_error

    error = engine_error(EngineDeadError())
    assert isinstance(error, EngineDead) and "vLLM" in (error.detail or "")


async def test_from_shutdown_on_every_response_says_connection_close(app_factory: Any,
                                                                     backend: GatedBackend) -> None:
    """Issue 24: a client must not reuse a connection the server will close (app/drain.py), and an
    answer that was being computed at SIGTERM closes its connection too."""
    backend.held = True
    app = app_factory(shutdown_timeout=60)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        before = await c.get("/v1/models")
        answering = asyncio.ensure_future(c.post("/v1/chat/completions", json=chat_body()))
        await backend.called.wait()
        app.state.lifecycle.shutdown()
        after = [await c.get("/v1/models"), await c.get("/health"), await c.post("/v1/chat/completions",
                                                                                 json=chat_body())]
        backend.go.set()
        answered = await answering
    assert "connection" not in before.headers
    assert [r.status_code for r in after] == [200, 503, 503]
    assert answered.status_code == 200
    assert all(r.headers["connection"] == "close" for r in [*after, answered])
