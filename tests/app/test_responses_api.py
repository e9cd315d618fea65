"""POST /v1/responses on the wire, over a scripted backend: the same pipeline as chat (the same
prompts, answer, usage and `aft`), input items turned into the chat conversation, the stream as
events the OpenAI SDK's own types and its `responses.stream()` helper accept, and OpenAI-shaped
400s for what the service does not provide."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import replace
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from serving.backends.base import Generation, Role, Sampling, StreamDelta
from serving.errors import UpstreamTimeout
from serving.format import Message
from tests.app.conftest import ASGIClient, GatedBackend
from tests.app.test_metrics import moved, scrape
from tests.fakes import MODEL, Call

AFT = {"proposals": 2, "rounds": 1}
EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


def same_reply(call: Call, i: int) -> str:
    # One text per prompt, so that streamed and non-streamed answers (whose round 0 is split into
    # requests differently) are made of the same drafts.
    return f"{call.role} says {len(call.messages[0]['content'])}"


def events(body: str) -> list[dict[str, Any]]:
    """The stream's events; each `event:` line names its data's type."""
    out = []
    for block in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        event = json.loads(lines["data"])
        assert lines["event"] == event["type"]
        out.append(event)
    return out


def without_ids(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in item.items() if k != "id"} for item in output]


def answer_text(response: dict[str, Any]) -> str:
    return "".join(part["text"] for item in response["output"] if item["type"] == "message"
                   for part in item["content"])


async def test_a_response_is_the_chat_answer_with_its_usage_and_aft(client: httpx.AsyncClient,
                                                                    backend: GatedBackend) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]
    chat = (await client.post("/v1/chat/completions", json={"model": MODEL, "messages": messages, "aft": AFT})).json()
    chat_calls, backend.calls = backend.calls, []
    reply = await client.post("/v1/responses", json={"model": MODEL, "input": "What is 2+2?",
                                                      "instructions": "Be brief.", "aft": AFT})
    assert reply.status_code == 200
    body = reply.json()
    Response.model_validate(body)  # the SDK's own type
    assert [(c.role, c.messages, c.n) for c in backend.calls] == [(c.role, c.messages, c.n) for c in chat_calls]
    assert body["object"] == "response" and body["id"].startswith("resp_") and body["status"] == "completed"
    assert [item["type"] for item in body["output"]] == ["message"]
    assert answer_text(body) == chat["choices"][0]["message"]["content"]
    usage = chat["usage"]
    assert {k: body["usage"][k] for k in ("input_tokens", "output_tokens", "total_tokens")} == {
        "input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"],
        "total_tokens": usage["total_tokens"]}
    # The drafts' tokens count as reasoning: every round's but the answer's.
    rounds = body["aft"]["answers"][0]["usage_by_round"]
    assert body["usage"]["output_tokens_details"]["reasoning_tokens"] == rounds[0]["completion_tokens"]
    assert body["aft"] == chat["aft"]
    assert body["instructions"] == "Be brief." and body["store"] is False


async def test_input_items_become_the_chat_conversation(client: httpx.AsyncClient, backend: GatedBackend) -> None:
    call = {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    items: list[dict[str, Any]] = [
        {"role": "developer", "content": "Answer in French."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather in "},
                                                        {"type": "input_text", "text": "Paris and Rome?"}]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "Let me look.", "annotations": []}]},
        {"type": "function_call", "call_id": "call_1", "id": "fc_1", "status": "completed", **call},
        {"type": "function_call", "call_id": "call_2", **call},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "rain"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "drafts"}]},
    ]
    reply = await client.post("/v1/responses", json={"model": MODEL, "input": items, "aft": {"rounds": 0}})
    assert reply.status_code == 200, reply.text
    function = {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert backend.calls[0].messages == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": function},
            {"id": "call_2", "type": "function", "function": function}]},
        {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
        {"role": "tool", "content": "rain", "tool_call_id": "call_2"},
    ]


async def test_sampling_and_tools_reach_the_pipeline(app_factory: Callable[..., FastAPI],
                                                     backend: GatedBackend) -> None:
    tool = {"type": "function", "name": "get_weather", "description": "Weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
    app = app_factory(enable_auto_tool_choice=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://aft.test") as client:
        reply = await client.post("/v1/responses", json={
            "model": MODEL, "input": "Weather?", "aft": AFT, "max_output_tokens": 7, "temperature": 0.3,
            "top_p": 0.9, "tools": [tool], "tool_choice": {"type": "function", "name": "get_weather"},
            "parallel_tool_calls": False})
    assert reply.status_code == 200, reply.text
    final = backend.calls[-1].sampling
    assert (final.max_tokens, final.temperature, final.top_p) == (7, 0.3, 0.9)
    assert final.tools is not None and backend.calls[0].sampling.tools is not None
    function = {k: v for k, v in tool.items() if k != "type"}
    assert final.tools.definitions == ({"type": "function", "function": function},)
    assert (final.tools.choice, final.tools.parallel) == ({"type": "function", "function": {"name": "get_weather"}},
                                                          False)
    assert backend.calls[0].sampling.tools.choice == "none"  # drafts write text, as on chat
    body = reply.json()
    assert (body["tool_choice"], body["parallel_tool_calls"], body["max_output_tokens"]) == (
        {"type": "function", "name": "get_weather"}, False, 7)


async def test_a_stream_is_the_event_sequence_the_sdk_accumulates(client: httpx.AsyncClient,
                                                                  sdk: openai.AsyncOpenAI,
                                                                  backend: GatedBackend) -> None:
    backend.reply = same_reply
    request = {"model": MODEL, "input": "What is 2+2?", "aft": AFT}
    whole = (await client.post("/v1/responses", json=request)).json()
    raw = await client.post("/v1/responses", json={**request, "stream": True})
    assert raw.headers["content-type"].startswith("text/event-stream")
    sent = events(raw.text)
    for event in sent:
        EVENT.validate_python(event)  # every event is one of the SDK's own types
    assert [e["sequence_number"] for e in sent] == list(range(len(sent)))
    kinds = [e["type"] for e in sent]
    deltas = kinds.count("response.output_text.delta")
    assert deltas == len(answer_text(whole).split(" ")) > 1  # token by token
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", *["response.output_text.delta"] * deltas,
                     "response.output_text.done", "response.content_part.done", "response.output_item.done",
                     "response.completed"]
    completed = sent[-1]["response"]
    assert answer_text(completed) == answer_text(whole)
    assert (completed["usage"], completed["aft"], completed["status"]) == (whole["usage"], whole["aft"], "completed")

    async with sdk.responses.stream(model=MODEL, input="What is 2+2?", extra_body={"aft": AFT}) as stream:
        texts = [event.delta async for event in stream if event.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(texts) == final.output_text == answer_text(whole)
    assert final.usage is not None and final.usage.total_tokens == whole["usage"]["total_tokens"]


async def test_with_aft_reasoning_the_drafts_are_a_reasoning_item(client: httpx.AsyncClient,
                                                                  sdk: openai.AsyncOpenAI,
                                                                  backend: GatedBackend) -> None:
    backend.reply = same_reply
    aft = {**AFT, "reasoning": True}
    whole = (await client.post("/v1/responses", json={"model": MODEL, "input": "Hi", "aft": aft})).json()
    assert [item["type"] for item in whole["output"]] == ["reasoning", "message"]
    drafts = whole["output"][0]["content"][0]["text"]
    assert drafts.startswith("### Round 0 · draft 1\nproposer says") and "draft 2" in drafts

    sent = events((await client.post("/v1/responses", json={"model": MODEL, "input": "Hi", "aft": aft,
                                                             "stream": True})).text)
    kinds = [e["type"] for e in sent]
    assert kinds.index("response.reasoning_text.done") < kinds.index("response.output_text.delta")
    pieces = [e["delta"] for e in sent if e["type"] == "response.reasoning_text.delta"]
    assert len(pieces) >= 2 and "".join(pieces) == drafts
    assert without_ids(sent[-1]["response"]["output"]) == without_ids(whole["output"])

    response = await sdk.responses.create(model=MODEL, input="Hi", extra_body={"aft": aft})
    assert response.output[0].type == "reasoning" and response.output[0].content is not None
    assert response.output[0].content[0].text == drafts and response.output_text == answer_text(whole)


async def test_a_failure_mid_stream_is_an_error_event(client: httpx.AsyncClient, sdk: openai.AsyncOpenAI,
                                                      backend: GatedBackend) -> None:
    backend.fail_on_call, backend.error = 2, UpstreamTimeout("the upstream took too long")
    raw = await client.post("/v1/responses", json={"model": MODEL, "input": "Hi", "aft": AFT, "stream": True})
    sent = events(raw.text)
    assert [e["type"] for e in sent] == ["response.created", "response.in_progress", "error"]
    EVENT.validate_python(sent[-1])
    assert sent[-1]["message"] == "the upstream took too long"
    backend.fail_on_call, backend.calls = 2, []
    with pytest.raises(openai.APIError, match="the upstream took too long"):
        async with sdk.responses.stream(model=MODEL, input="Hi", extra_body={"aft": AFT}) as stream:
            async for _ in stream:
                pass


async def test_store_is_accepted_and_nothing_is_kept(client: httpx.AsyncClient) -> None:
    reply = await client.post("/v1/responses", json={"model": MODEL, "input": "Hi", "store": True,
                                                      "metadata": {"k": "v"}, "include": [], "aft": AFT})
    assert reply.status_code == 200
    assert (reply.json()["store"], reply.json()["metadata"]) == (False, {"k": "v"})
    assert (await client.get(f"/v1/responses/{reply.json()['id']}")).status_code == 404


@pytest.mark.parametrize(("extra", "param"), [
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ({"background": True}, "background"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"include": ["message.output_text.logprobs"]}, "include"),
    ({"reasoning": {"effort": "high"}}, "reasoning"),
    ({"truncation": "auto"}, "truncation"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"text": {"verbosity": "low"}}, "text.verbosity"),
    ({"tools": [{"type": "web_search"}]}, "tools.0.type"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "function", "name": "g"}}, "tool_choice"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input.0"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:,"}]}]},
     "input.0.message.content.0"),
    ({"input": [{"role": "assistant", "content": "Hello"}]}, "input"),
    ({"input": []}, "input"),
    ({"text": {"format": {"type": "json_schema", "name": "bad name", "schema": {}}}}, "text.format.json_schema.name"),
    ({"aft": {"proposals": 0}}, "aft.proposals"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
])
async def test_what_the_service_cannot_do_is_a_400_naming_it(client: httpx.AsyncClient, backend: GatedBackend,
                                                             extra: dict[str, Any], param: str) -> None:
    reply = await client.post("/v1/responses", json={"model": MODEL, "input": "Hi", **extra})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert backend.calls == []


async def test_an_unknown_model_is_a_404(client: httpx.AsyncClient) -> None:
    reply = await client.post("/v1/responses", json={"model": "gpt-4o", "input": "Hi"})
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "model_not_found"


SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
          "additionalProperties": False}


@pytest.mark.parametrize(("text_format", "wire"), [
    ({"type": "json_schema", "name": "weather", "schema": SCHEMA, "strict": True, "description": "A city."},
     {"type": "json_schema", "json_schema": {"name": "weather", "schema": SCHEMA, "strict": True,
                                             "description": "A city."}}),
    ({"type": "json_object"}, {"type": "json_object"}),
    ({"type": "text"}, None),
])
async def test_text_format_is_the_chat_paths_response_format(client: httpx.AsyncClient, backend: GatedBackend,
                                                             text_format: dict[str, Any],
                                                             wire: dict[str, Any] | None) -> None:
    reply = await client.post("/v1/responses", json={"model": MODEL, "input": "Weather?", "aft": AFT,
                                                      "text": {"format": text_format}})
    assert reply.status_code == 200, reply.text
    final = backend.calls[-1].sampling.response_format
    assert (final.wire() if final else None) == wire
    assert reply.json()["text"] == {"format": text_format}


async def test_a_schema_that_is_not_one_is_a_400_naming_text_format(client: httpx.AsyncClient,
                                                                    backend: GatedBackend) -> None:
    reply = await client.post("/v1/responses", json={
        "model": MODEL, "input": "Weather?",
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "objekt"}}}})
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["param"] == "text.format.schema"
    assert error["message"].startswith("text.format.schema is not a valid JSON schema")
    assert backend.calls == []


async def test_responses_are_counted_and_logged_as_chat_requests_are(client: httpx.AsyncClient,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    before = await scrape(client)
    with caplog.at_level(logging.INFO, logger="aft.access"):
        assert (await client.post("/v1/responses", json={"model": MODEL, "input": "Hi", "aft": AFT})).status_code == 200
        assert (await client.post("/v1/responses", json={"model": MODEL, "input": "Hi", "aft": AFT,
                                                          "stream": True})).status_code == 200
        assert (await client.post("/v1/responses", json={"model": MODEL, "input": "Hi", "background": True,
                                                          "stream": True})).status_code == 400
    after = await scrape(client)
    assert moved(before, after, "aft_requests_total", stream="false", status="200") == 1
    assert moved(before, after, "aft_requests_total", stream="true", status="200") == 1
    assert moved(before, after, "aft_requests_total", stream="true", status="400") == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "aft.access"]
    assert len(lines) == 3 and all(line.startswith("POST /v1/responses") for line in lines)
    assert "proposals=2 rounds=1" in lines[0] and "tokens=" in lines[1]


async def test_include_proposals_puts_the_rounds_in_the_last_events_aft(client: httpx.AsyncClient,
                                                                        backend: GatedBackend) -> None:
    backend.reply = same_reply
    request = {"model": MODEL, "input": "Hi", "aft": {**AFT, "include_proposals": True}}
    whole = (await client.post("/v1/responses", json=request)).json()
    sent = events((await client.post("/v1/responses", json={**request, "stream": True})).text)
    layers = whole["aft"]["answers"][0]["layers"]
    assert layers == [{"round": 0, "outputs": ["proposer says 1", "proposer says 1"]}]
    assert sent[-1]["response"]["aft"]["answers"][0]["layers"] == layers


class CutBackend(GatedBackend):
    """Every sample ends at max_tokens (finish_reason "length")."""

    async def generate(self, role: Role, messages: Sequence[Message], sampling: Sampling, n: int) -> Generation:
        generation = await super().generate(role, messages, sampling, n)
        return Generation([replace(c, finish_reason="length") for c in generation.completions], generation.usage)

    async def stream(self, role: Role, messages: Sequence[Message],
                     sampling: Sampling) -> AsyncGenerator[StreamDelta, None]:
        async for delta in super().stream(role, messages, sampling):
            yield replace(delta, finish_reason="length") if delta.finish_reason else delta


@pytest.mark.parametrize("backend", [CutBackend()])
async def test_an_answer_cut_by_max_output_tokens_is_incomplete(client: httpx.AsyncClient,
                                                                sdk: openai.AsyncOpenAI) -> None:
    request = {"model": MODEL, "input": "Hi", "aft": AFT, "max_output_tokens": 3}
    whole = (await client.post("/v1/responses", json=request)).json()
    assert (whole["status"], whole["incomplete_details"]) == ("incomplete", {"reason": "max_output_tokens"})
    assert whole["output"][0]["status"] == "incomplete"
    sent = events((await client.post("/v1/responses", json={**request, "stream": True})).text)
    assert sent[-1]["type"] == "response.incomplete"  # OpenAI's terminal event for a cut answer
    assert without_ids(sent[-1]["response"]["output"]) == without_ids(whole["output"])
    async with sdk.responses.stream(model=MODEL, input="Hi", max_output_tokens=3, extra_body={"aft": AFT}) as stream:
        kinds = [event.type async for event in stream]
    assert kinds[-1] == "response.incomplete"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_client_leaving_during_the_drafts_cancels_them(app_factory: Callable[..., FastAPI],
                                                               backend: GatedBackend, stream: bool) -> None:
    app = app_factory()
    backend.held = True  # drafts that never end unless cancelled
    client = ASGIClient(app, {"model": MODEL, "input": "Hi", "aft": AFT, "stream": stream})

    async def leave_once_drafting() -> None:
        await backend.called.wait()
        client.leave.set()

    leaving = asyncio.ensure_future(leave_once_drafting())
    await client.post("/v1/responses")
    await leaving
    assert backend.cancelled == 1 and client.status == (200 if stream else 499)
    assert app.state.lifecycle.in_flight == 0  # the slot came back
