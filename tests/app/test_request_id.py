"""X-Request-ID: the client's (or one of ours) comes back on every response, names the completion
and reaches the upstream."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from serving.backends.openai import OpenAIBackend
from serving.backends.openai_target import Upstream
from serving.errors import UpstreamTimeout
from tests.app.conftest import GatedBackend, make_settings
from tests.fakes import chat_body
from tests.serving.backends.scripted_upstreams import Upstreams, completion, recording, sse

RID = "req-7f3a.9:client/1"


def client_of(app: FastAPI) -> httpx.AsyncClient:
    # raise_app_exceptions=False: an unexpected error is a 500 here, as a server makes it.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://aft.test")


async def test_the_clients_id_names_the_completion_and_comes_back(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=chat_body(), headers={"X-Request-ID": RID})
    assert response.headers["x-request-id"] == RID
    assert response.json()["id"] == f"chatcmpl-{RID}"
    async with client.stream("POST", "/v1/chat/completions", json=chat_body(stream=True),
                             headers={"X-Request-ID": RID}) as streamed:
        assert streamed.headers["x-request-id"] == RID
        chunks = [json.loads(line[6:]) async for line in streamed.aiter_lines() if line.startswith("data: {")]
    assert chunks and {chunk["id"] for chunk in chunks} == {f"chatcmpl-{RID}"}


async def test_without_one_each_request_gets_its_own(client: httpx.AsyncClient) -> None:
    ids = set()
    for _ in range(2):
        response = await client.post("/v1/chat/completions", json=chat_body())
        rid = response.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", rid) and response.json()["id"] == f"chatcmpl-{rid}"
        ids.add(rid)
    assert len(ids) == 2


@pytest.mark.parametrize("unsafe", ["two words", "x" * 129, "<script>", "é-accent", "-leading-dash", '"quoted"'])
async def test_an_unsafe_id_is_replaced_not_echoed(client: httpx.AsyncClient, unsafe: str) -> None:
    response = await client.post("/v1/chat/completions", json=chat_body(),
                                 headers=[(b"X-Request-ID", unsafe.encode())])
    rid = response.headers["x-request-id"]
    assert rid != unsafe and re.fullmatch(r"[0-9a-f]{32}", rid)
    assert response.json()["id"] == f"chatcmpl-{rid}"


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("POST", "/v1/chat/completions", b"{not json", 400),
    ("POST", "/v1/chat/completions", json.dumps(chat_body(model="nope")).encode(), 404),
    ("POST", "/v1/chat/completions", b"x" * 2048, 413),
    ("GET", "/no/such/path", b"", 404),
    ("GET", "/health", b"", 200),
    ("GET", "/metrics", b"", 200),
])
async def test_every_response_carries_the_id(app_factory: Callable[..., FastAPI], method: str, path: str,
                                            body: bytes, status: int) -> None:
    async with client_of(app_factory(max_request_bytes=1024)) as client:
        response = await client.request(method, path, content=body, headers={"X-Request-ID": RID,
                                                                             "Content-Type": "application/json"})
    assert response.status_code == status
    assert response.headers["x-request-id"] == RID


async def test_auth_refusals_and_upstream_errors_carry_the_id(app_factory: Callable[..., FastAPI],
                                                             backend: GatedBackend) -> None:
    async with client_of(app_factory(api_keys=["k"])) as client:
        response = await client.post("/v1/chat/completions", json=chat_body(), headers={"X-Request-ID": RID})
        assert (response.status_code, response.headers["x-request-id"]) == (401, RID)
        backend.error = UpstreamTimeout("the upstream model server did not answer in time")
        backend.fail_on_call = 1
        response = await client.post("/v1/chat/completions", json=chat_body(),
                                     headers={"X-Request-ID": RID, "Authorization": "Bearer k"})
        assert (response.status_code, response.headers["x-request-id"]) == (504, RID)


async def test_an_unexpected_error_is_a_500_with_the_id(app_factory: Callable[..., FastAPI],
                                                       backend: GatedBackend) -> None:
    backend.error = RuntimeError("a bug")
    backend.fail_on_call = 1
    async with client_of(app_factory()) as client:
        response = await client.post("/v1/chat/completions", json=chat_body(), headers={"X-Request-ID": RID})
    assert response.status_code == 500 and response.json()["error"]["type"] == "server_error"
    assert response.headers["x-request-id"] == RID


async def test_the_id_reaches_the_upstream_on_every_call(ups: Upstreams) -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/tokenize"):
            return httpx.Response(404)  # no context budget: every call is a chat completion
        body: dict[str, Any] = json.loads(request.content)
        if body.get("stream"):
            return httpx.Response(200, content=b"".join(sse({"choices": [{"index": 0, "delta": {"content": "x"},
                                                                          "finish_reason": "stop"}]}, "[DONE]")),
                                  headers={"Content-Type": "text/event-stream"})
        return httpx.Response(200, json=completion(*["draft"] * body["n"]))

    seen, handler = recording(reply)
    url = await ups.serve(handler)
    backend = OpenAIBackend(Upstream(url, "m"))
    app = create_app(make_settings(upstream_url=url), backend=backend)
    async with app.router.lifespan_context(app), client_of(app) as client:
        body = chat_body(aft={"proposals": 2, "rounds": 1})
        assert (await client.post("/v1/chat/completions", json=body, headers={"X-Request-ID": RID})).status_code == 200
        response = await client.post("/v1/chat/completions", json={**body, "stream": True})
        assert response.status_code == 200
    generated = response.headers["x-request-id"]
    assert [(r.url.path, r.headers.get("x-request-id")) for r in seen] == [
        ("/tokenize", RID), ("/v1/chat/completions", RID), ("/v1/chat/completions", RID),
        ("/v1/chat/completions", generated), ("/v1/chat/completions", generated)]


@pytest.fixture
async def ups() -> AsyncIterator[Upstreams]:
    async with contextlib.AsyncExitStack() as stack:
        yield Upstreams(stack)
