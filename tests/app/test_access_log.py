"""One access line per finished chat request (streamed or not, refusals too), every log line of a
request stamped with its id, JSON lines for log shippers, and nothing secret in the logs."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.log_format import log_handler
from serving.errors import UpstreamUnavailable
from tests.app.conftest import GatedBackend
from tests.fakes import chat_body

RID = "access-test-1"


@pytest.fixture
def logs() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The root logger's lines at info, in the JSON format; call it for the lines so far, parsed."""
    stream = io.StringIO()
    handler = log_handler("json", stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture
async def keyed(app_factory: Callable[..., FastAPI]) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app_factory(api_keys=["sk-very-secret"]))
    async with httpx.AsyncClient(transport=transport, base_url="http://aft.test",
                                 headers={"Authorization": "Bearer sk-very-secret"}) as c:
        yield c


def access_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["logger"] == "aft.access"]


async def test_one_line_per_answer_with_the_pipelines_report(keyed: httpx.AsyncClient,
                                                             logs: Callable[[], list[dict[str, Any]]]) -> None:
    body = chat_body(aft={"proposals": 3, "rounds": 2})
    await keyed.post("/v1/chat/completions", json=body, headers={"X-Request-ID": RID})
    await keyed.post("/v1/chat/completions", json={**body, "stream": True})
    plain, streamed = access_lines(logs())
    for line, stream in ((plain, False), (streamed, True)):
        assert line["method"] == "POST" and line["path"] == "/v1/chat/completions"
        assert (line["status"], line["outcome"], line["stream"]) == (200, "200", stream)
        assert (line["proposals"], line["rounds"], line["n"]) == (3, 2, 1)
        assert [r["round"] for r in line["tokens_by_round"]] == [0, 1, 2]
        assert [r["requests"] for r in line["tokens_by_round"]] == [1, 1, 1]
        assert all(r["completion"] > 0 and r["prompt"] > 0 for r in line["tokens_by_round"])
        assert len(line["seconds_by_round"]) == 3 and all(s >= 0 for s in line["seconds_by_round"])
        assert line["duration_s"] >= sum(line["seconds_by_round"]) * 0.99
    assert plain["request_id"] == RID and streamed["request_id"] not in ("-", RID)
    assert "POST /v1/chat/completions 200" in plain["message"] and "proposals=3 rounds=2" in plain["message"]


async def test_refusals_and_failures_have_their_line(keyed: httpx.AsyncClient, backend: GatedBackend,
                                                     logs: Callable[[], list[dict[str, Any]]]) -> None:
    await keyed.post("/v1/chat/completions", json=chat_body(model="nope"))
    await keyed.post("/v1/chat/completions", content=b"{", headers={"Content-Type": "application/json"})
    backend.error = UpstreamUnavailable("the upstream model server failed", detail="upstream http://u: boom")
    backend.fail_on_call = 1
    await keyed.post("/v1/chat/completions", json=chat_body(), headers={"X-Request-ID": RID})
    backend.calls.clear()
    await keyed.post("/v1/chat/completions", json=chat_body(stream=True, aft={"rounds": 0}))
    lines = logs()
    unknown, invalid, failed, streamed = access_lines(lines)
    assert (unknown["status"], unknown["outcome"], unknown["error"]) == (404, "404", "model_not_found")
    assert (invalid["status"], invalid["outcome"]) == (400, "400")
    assert (failed["status"], failed["outcome"], failed["error"]) == (502, "502", "upstream_unavailable")
    assert (streamed["status"], streamed["outcome"], streamed["error"]) == (200, "502", "upstream_unavailable")
    # The operator's warning about the failure carries the same id as its access line.
    warning = next(line for line in lines if line["level"] == "WARNING" and "boom" in line["message"])
    assert warning["request_id"] == RID == failed["request_id"]


async def test_every_line_of_a_request_carries_its_id(keyed: httpx.AsyncClient, backend: GatedBackend,
                                                      logs: Callable[[], list[dict[str, Any]]]) -> None:
    backend.error = UpstreamUnavailable("the upstream model server failed", detail="upstream http://u: boom")
    backend.fail_on_call = 2
    await keyed.post("/v1/chat/completions", json=chat_body(stream=True, aft={"rounds": 1}),
                     headers={"X-Request-ID": RID})
    lines = logs()
    assert len(lines) >= 2  # the mid-stream warning and the access line
    assert {line.get("request_id") for line in lines} == {RID}


async def test_other_paths_log_at_debug_only(keyed: httpx.AsyncClient,
                                             logs: Callable[[], list[dict[str, Any]]]) -> None:
    await keyed.get("/health")
    await keyed.get("/metrics")
    assert access_lines(logs()) == []
    logging.getLogger("aft.access").setLevel(logging.DEBUG)
    try:
        await keyed.get("/health")
    finally:
        logging.getLogger("aft.access").setLevel(logging.NOTSET)
    (line,) = access_lines(logs())
    assert (line["path"], line["status"]) == ("/health", 200) and "outcome" not in line


async def test_no_prompt_completion_or_key_in_the_logs(keyed: httpx.AsyncClient, backend: GatedBackend,
                                                       logs: Callable[[], list[dict[str, Any]]]) -> None:
    prompt = "my-private-question-about-zebras"
    backend.reply = lambda call, i: "secret-answer-about-okapis"
    body = chat_body(messages=[{"role": "user", "content": prompt}], aft={"rounds": 1})
    for stream in (False, True):
        response = await keyed.post("/v1/chat/completions", json={**body, "stream": stream})
        assert "okapis" in response.text
    backend.error = UpstreamUnavailable("the upstream model server failed", detail="upstream http://u: boom")
    backend.fail_on_call = len(backend.calls) + 2
    await keyed.post("/v1/chat/completions", json=body)
    await keyed.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer sk-wrong-key"})
    text = json.dumps(logs())
    assert "aft.access" in text
    for secret in (prompt, "okapis", "sk-very-secret", "sk-wrong-key"):
        assert secret not in text


def test_text_lines_carry_the_id_in_brackets() -> None:
    stream = io.StringIO()
    handler = log_handler("text", stream)
    record = logging.LogRecord("aft.test", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    handler.handle(record)
    assert stream.getvalue().rstrip().endswith("INFO aft.test [-] hello world")


async def test_an_unexpected_error_has_its_traceback_and_access_line_under_the_id(
        app_factory: Callable[..., FastAPI], backend: GatedBackend, logs: Callable[[], list[dict[str, Any]]]) -> None:
    backend.error, backend.fail_on_call = RuntimeError("a bug"), 1
    transport = httpx.ASGITransport(app=app_factory(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://aft.test") as client:
        assert (await client.post("/v1/chat/completions", json=chat_body(),
                                  headers={"X-Request-ID": RID})).status_code == 500
    lines = logs()
    error = next(line for line in lines if line["level"] == "ERROR")
    assert error["request_id"] == RID and "RuntimeError: a bug" in error["exception"]
    (access,) = access_lines(lines)
    assert (access["request_id"], access["status"], access["outcome"]) == (RID, 500, "500")
