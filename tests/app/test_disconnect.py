"""A client that leaves mid-request cancels the pipeline (and so the backend's requests)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fakes import ScriptedBackend, chat_body


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
    await call_and_leave(app, chat_body(), leave_after=0.1)
    assert backend.cancelled == 1
    assert app.state.chat.admission.active == 0
    metrics = app.state.metrics.render().decode()
    assert 'aft_requests_total{status="disconnected",stream="false"} 1.0' in metrics
