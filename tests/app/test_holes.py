"""The small holes at the HTTP edge (issue 11, point 6), each reproduced."""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx
import pytest

from serving.errors import UpstreamUnavailable
from tests.app.conftest import ASGIClient, GatedBackend
from tests.fakes import MODEL, chat_body


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_a_body_not_sent_as_json_is_415_and_runs_nothing(
        client: httpx.AsyncClient, backend: GatedBackend, content_type: str | None) -> None:
    # A browser sends text/plain cross-site without a preflight: it must not run the pipeline.
    headers = {"content-type": content_type} if content_type else {}
    response = await client.post("/v1/chat/completions", content=httpx.Response(200, json=chat_body()).content,
                                 headers=headers)
    assert response.status_code == 415, response.text
    assert error_of(response)["code"] == "unsupported_media_type"
    assert backend.calls == []


async def test_json_with_a_charset_or_a_json_suffix_is_accepted(client: httpx.AsyncClient) -> None:
    for content_type in ("application/json; charset=utf-8", "application/vnd.api+json"):
        response = await client.post("/v1/chat/completions", content=httpx.Response(200, json=chat_body()).content,
                                     headers={"content-type": content_type})
        assert response.status_code == 200, response.text


async def test_a_client_leaving_mid_upload_logs_no_error(app_factory: Any, backend: GatedBackend,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    app = app_factory()
    client = ASGIClient(app, parts=[b'{"model": "aft-test", "mess'], complete=False)
    client.leave.set()  # the rest of the body never comes: the connection closes
    with caplog.at_level(logging.INFO):
        await client.post()
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert backend.calls == [] and app.state.lifecycle.in_flight == 0


async def test_a_client_stalling_mid_upload_gets_408(app_factory: Any, backend: GatedBackend) -> None:
    app = app_factory(body_read_timeout=0.05)
    client = ASGIClient(app, parts=[b'{"model": "aft-test", "mess'], complete=False)  # then nothing, and it stays
    await client.post()
    assert client.status == 408 and b"request_timeout" in client.body
    assert backend.calls == []


async def test_a_chunked_body_over_the_limit_is_413(app_factory: Any, backend: GatedBackend) -> None:
    app = app_factory(max_request_bytes=1000)
    client = ASGIClient(app, parts=[b"[" + b" " * 600, b" " * 600, b"]"])
    await client.post()
    assert client.status == 413 and backend.calls == []


async def test_with_api_keys_metrics_need_one_only_when_protected(app_factory: Any) -> None:
    for protect, status in ((False, 200), (True, 401)):
        app = app_factory(api_keys=["sk-one"], protect_metrics=protect)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            assert (await c.get("/metrics")).status_code == status
            assert (await c.get("/metrics", headers={"authorization": "Bearer sk-one"})).status_code == 200
            assert (await c.get("/metrics", headers={"authorization": "Bearer wrong"})).status_code == status
            assert (await c.get("/health")).status_code == 200
            assert (await c.get("/v1/models")).status_code == 401


async def test_with_api_keys_the_docs_page_loads_its_schema_and_offers_to_authorize(app_factory: Any) -> None:
    """Issue 22: a browser opening /docs sends no key, neither for the page nor for the schema it
    fetches; the schema's bearer scheme gives the page its Authorize button."""
    app = app_factory(api_keys=["sk-one"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        page = await c.get("/docs")
        schema_url = re.search(r"url: '([^']+)'", page.text)
        assert page.status_code == 200 and schema_url is not None
        schema = await c.get(schema_url.group(1))
        assert schema.status_code == 200
        assert schema.json()["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
        assert '"persistAuthorization": true' in page.text
        # "Try it out" after Authorize: the request carries the key typed in.
        assert (await c.get("/v1/models")).status_code == 401
        assert (await c.get("/v1/models", headers={"authorization": "Bearer sk-one"})).status_code == 200


async def test_without_api_keys_they_stay_open(client: httpx.AsyncClient) -> None:
    for path in ("/metrics", "/docs", "/openapi.json"):
        assert (await client.get(path)).status_code == 200


async def test_a_long_model_name_is_not_echoed_in_full(client: httpx.AsyncClient) -> None:
    name = "m" * 1_000_000
    for response in (await client.post("/v1/chat/completions", json=chat_body(model=name)),
                     await client.get(f"/v1/models/{name[:10_000]}")):
        assert response.status_code == 404
        assert len(response.content) < 1000 and "characters" in error_of(response)["message"]


async def test_405_says_which_methods_are_allowed(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/chat/completions")
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert error_of(response)["type"] == "invalid_request_error"


async def test_an_upstream_failures_detail_is_logged_not_sent(
        client: httpx.AsyncClient, backend: GatedBackend, caplog: pytest.LogCaptureFixture) -> None:
    backend.fail_on_call = 1
    backend.error = UpstreamUnavailable("the proposer upstream refused the connection",
                                        detail="http://10.0.0.7:8000/v1/chat/completions: connection refused")
    with caplog.at_level(logging.WARNING):
        response = await client.post("/v1/chat/completions", json=chat_body())
    assert response.status_code == 502 and "10.0.0.7" not in response.text
    assert any("10.0.0.7" in r.getMessage() for r in caplog.records)


async def test_openapi_documents_auth_and_error_statuses(app_factory: Any) -> None:
    app = app_factory(api_keys=["sk-one"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        spec = (await c.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    operation = spec["paths"]["/v1/chat/completions"]["post"]
    assert operation["security"] == [{"HTTPBearer": []}]
    assert {"400", "401", "404", "413", "415", "502", "503", "504"} <= set(operation["responses"])
    assert "422" not in operation["responses"]  # FastAPI's default; this service answers 400
    assert operation["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"}
    assert "security" not in spec["paths"]["/health"]["get"]
    assert MODEL  # the chat request body is the pydantic model, documented by reference
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ChatCompletionRequest"}
