"""Every error leaves as {"error": {message, type, param, code}} with the right status."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from serving.errors import (
    ContextLengthExceeded,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from tests.app.conftest import GatedBackend
from tests.fakes import MODEL, ScriptedBackend, chat_body

TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


@pytest.mark.parametrize(("body", "param", "fragment"), [
    ({"model": MODEL}, "messages", "Field required"),
    (chat_body(messages=[]), "messages", "at least 1"),
    (chat_body(temperature=3), "temperature", "less than or equal to 2"),
    (chat_body(top_p=0), "top_p", "greater than 0"),
    (chat_body(max_tokens=0), "max_tokens", "greater than or equal to 1"),
    (chat_body(messages=[{"role": "wizard", "content": "x"}]), "messages.0.role", "Input should be"),
    (chat_body(aft={"proposals": 0}), "aft.proposals", "greater than or equal to 1"),
    (chat_body(aft={"proposals": 17}), "aft.proposals", "at most 16 proposals"),
    (chat_body(aft={"rounds": 9}), "aft.rounds", "at most 4 rounds"),
    (chat_body(aft={"voting": True}), "aft.voting", "Extra inputs are not permitted"),
    (chat_body(n=9), "n", "at most 8"),
    (chat_body(stop=["a", "b", "c", "d", "e"]), "stop", "at most 4"),
    (chat_body(max_tokens=5, max_completion_tokens=6), "max_completion_tokens", "disagree"),
    (chat_body(tools=[{"type": "function"}]), "tools.0.function", "Field required"),
    (chat_body(functions=[{"name": "f"}]), "functions", "not supported"),
    (chat_body(tool_choice="required"), "tool_choice", "needs tools"),
    (chat_body(response_format={"type": "xml"}), "response_format.type", "'xml' is not supported"),
    (chat_body(response_format={"type": "json_schema"}), "response_format.json_schema", "needs a json_schema"),
    (chat_body(response_format={"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}}),
     "response_format.json_schema.name", "letters, digits"),
    (chat_body(response_format={"type": "json_schema", "json_schema": {"name": "A"}}),
     "response_format.json_schema.schema", "is missing"),
    (chat_body(response_format={"type": "json_schema", "json_schema": {"name": "A", "schema": {
        "type": "object", "properties": {"x": {"type": "strin"}}}}}),
     "response_format.json_schema.schema", "not a valid JSON schema: 'strin' is not valid under any"),
    (chat_body(response_format={"type": "json_schema", "json_schema": {"name": "A", "schema": [1]}}),
     "response_format.json_schema.schema", "must be a JSON schema object, got list"),
    (chat_body(response_format={"type": "json_schema", "json_schema": {"name": "A", "schema": {},
                                                                       "strict": "yes"}}),
     "response_format.json_schema.strict", "true, false or null"),
    (chat_body(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "nope"}}),
     "tool_choice", "'nope'"),
    (chat_body(logprobs=True), "logprobs", "not supported"),
    (chat_body(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]),
     "messages", "last message"),
])
async def test_bad_requests_are_400_naming_the_parameter(
        client: httpx.AsyncClient, backend: ScriptedBackend, body: dict[str, Any], param: str,
        fragment: str) -> None:
    for stream in (False, True):
        response = await client.post("/v1/chat/completions", json={**body, "stream": stream})
        assert response.status_code == 400, response.text
        error = error_of(response)
        assert error["type"] == "invalid_request_error"
        assert error["param"] == param
        assert fragment in error["message"]
    assert backend.calls == []


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", content=b"{not json",
                                 headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert error_of(response)["type"] == "invalid_request_error"


async def test_unknown_model_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=chat_body(model="gpt-9"))
    assert response.status_code == 404
    error = error_of(response)
    assert (error["code"], error["param"]) == ("model_not_found", "model")
    assert "gpt-9" in error["message"]
    assert (await client.get("/v1/models/gpt-9")).status_code == 404


async def test_unknown_route_is_404_in_the_same_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/nothing")
    assert response.status_code == 404 and error_of(response)["type"] == "not_found_error"


@pytest.mark.parametrize(("error", "status", "kind"), [
    (ContextLengthExceeded("prompt has 5000 tokens; the model takes 4096"), 400, "invalid_request_error"),
    (UpstreamUnavailable("the proposer upstream answered 503", detail="http://10.0.0.7:8000/v1"), 502,
     "server_error"),
    (UpstreamTimeout("the aggregator upstream timed out", detail="http://10.0.0.8:8000/v1"), 504, "server_error"),
    (UpstreamRateLimited("upstream answered 429"), 429, "rate_limit_error"),
])
async def test_backend_errors_map_to_statuses(client: httpx.AsyncClient, backend: ScriptedBackend,
                                              error: Exception, status: int, kind: str) -> None:
    backend.fail_on_call, backend.error = 1, error
    for stream in (False, True):
        response = await client.post("/v1/chat/completions", json=chat_body(stream=stream))
        assert "10.0.0." not in response.text  # the internal detail is logged, never sent
        if not stream:
            assert response.status_code == status
            body = error_of(response)
            assert body["type"] == kind and body["message"] == str(error)
        backend.calls.clear()


async def test_body_over_limit_is_413(app_factory: Any) -> None:
    app = app_factory(max_request_bytes=1000)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        big = chat_body(messages=[{"role": "user", "content": "x" * 2000}])
        response = await c.post("/v1/chat/completions", json=big)
        assert response.status_code == 413 and error_of(response)["code"] == "request_too_large"

        async def chunks() -> Any:
            for _ in range(3):
                yield b"x" * 600
        response = await c.post("/v1/chat/completions", content=chunks(),
                                headers={"content-type": "application/json"})
        assert response.status_code == 413


async def test_over_capacity_is_503_with_retry_after(app_factory: Any, backend: GatedBackend) -> None:
    backend.held = True
    app = app_factory(max_concurrent_requests=1)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        first = asyncio.create_task(c.post("/v1/chat/completions", json=chat_body()))
        await backend.called.wait()
        second = await c.post("/v1/chat/completions", json=chat_body())
        assert second.status_code == 503 and second.headers["retry-after"] == "1"
        assert error_of(second)["code"] == "overloaded"
        backend.go.set()
        assert (await first).status_code == 200
        # The slot is released: the next request is served.
        assert (await c.post("/v1/chat/completions", json=chat_body())).status_code == 200


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic sk-one", "Bearer"])
async def test_api_keys_reject_missing_or_wrong(app_factory: Any, header: str | None) -> None:
    app = app_factory(api_keys=["sk-one", "sk-two"])
    headers = {"authorization": header} if header else {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/models")):
            response = await c.request(method, path, json=chat_body(), headers=headers)
            assert response.status_code == 401
            assert error_of(response)["type"] == "authentication_error"
            assert response.headers["www-authenticate"] == "Bearer"
        assert (await c.get("/health")).status_code == 200


async def test_api_keys_accept_any_configured_key(app_factory: Any) -> None:
    app = app_factory(api_keys=["sk-one", "sk-two"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for key in ("sk-one", "sk-two"):
            response = await c.post("/v1/chat/completions", json=chat_body(),
                                    headers={"authorization": f"Bearer {key}"})
            assert response.status_code == 200


async def test_health_reports_a_broken_backend(client: httpx.AsyncClient, backend: ScriptedBackend) -> None:
    backend.error = UpstreamUnavailable("upstream http://u/v1 refused the connection")
    response = await client.get("/health")
    assert response.status_code == 502 and "refused" in error_of(response)["message"]


async def test_refusals_are_counted_with_their_status(app_factory: Any, backend: GatedBackend) -> None:
    backend.held = True
    app = app_factory(max_concurrent_requests=1, max_request_bytes=1000, api_keys=["sk-one"])
    key = {"authorization": "Bearer sk-one"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        busy = asyncio.create_task(c.post("/v1/chat/completions", json=chat_body(), headers=key))
        await backend.called.wait()
        refusals = [
            ({"json": chat_body()}, 401),
            ({"json": chat_body(messages=[{"role": "user", "content": "x" * 2000}])}, 413),
            ({"json": {"model": MODEL}, "headers": key}, 400),  # no messages: refused by the schema
            ({"json": chat_body(model="other", stream=True), "headers": key}, 404),
            ({"json": chat_body(aft={"proposals": 99}), "headers": key}, 400),
            ({"json": chat_body(), "headers": key}, 503),
        ]
        for kwargs, status in refusals:
            assert (await c.post("/v1/chat/completions", **kwargs)).status_code == status
        backend.go.set()
        assert (await busy).status_code == 200
        assert (await c.get("/v1/nothing-here")).status_code == 404  # not a chat request: not counted
        text = (await c.get("/metrics", headers=key)).text
    counted = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("aft_requests_total{")}
    assert counted == {
        'aft_requests_total{status="401",stream="unknown"}': 1.0,
        'aft_requests_total{status="413",stream="unknown"}': 1.0,
        'aft_requests_total{status="400",stream="unknown"}': 1.0,
        'aft_requests_total{status="404",stream="true"}': 1.0,
        'aft_requests_total{status="400",stream="false"}': 1.0,
        'aft_requests_total{status="503",stream="false"}': 1.0,
        'aft_requests_total{status="200",stream="false"}': 1.0,
    }
