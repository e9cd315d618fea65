"""POST /v1/chat/completions through the OpenAI SDK and raw HTTP, on a scripted backend."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import openai
from fastapi import FastAPI

from tests.fakes import MODEL, ScriptedBackend, chat_body


async def test_sdk_non_streaming_runs_the_pipeline(sdk: openai.AsyncOpenAI, backend: ScriptedBackend) -> None:
    completion = await sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is 2+2?"}], max_tokens=20, temperature=0.2)
    assert [(c.role, c.n) for c in backend.calls] == [("proposer", 5), ("aggregator", 5), ("aggregator", 1)]
    assert completion.choices[0].message.content == backend.reply(backend.calls[-1], 0)
    assert completion.choices[0].finish_reason == "stop"
    final = backend.calls[-1].sampling
    assert (final.temperature, final.max_tokens) == (0.2, 20)
    prompt = sum(sum(len(m["content"]) for m in c.messages) for c in backend.calls)
    assert completion.usage is not None and completion.usage.prompt_tokens == prompt
    assert completion.usage.completion_tokens == 11  # one word per sample, 5 + 5 + 1 samples
    aft = completion.model_extra["aft"]
    assert aft["proposals"] == 5 and aft["rounds"] == 2
    assert [r["requests"] for r in aft["answers"][0]["usage_by_round"]] == [1, 1, 1]
    assert "layers" not in aft["answers"][0]


async def test_aft_options_via_extra_body(sdk: openai.AsyncOpenAI, backend: ScriptedBackend) -> None:
    completion = await sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}],
        extra_body={"aft": {"proposals": 3, "rounds": 1, "proposal_temperature": 1.1,
                            "include_proposals": True}})
    assert [(c.role, c.n) for c in backend.calls] == [("proposer", 3), ("aggregator", 1)]
    assert backend.calls[0].sampling.temperature == 1.1
    layers = completion.model_extra["aft"]["answers"][0]["layers"]
    assert layers == [{"round": 0, "outputs": [backend.reply(backend.calls[0], i) for i in range(3)]}]


async def test_multi_turn_text_parts_and_system(sdk: openai.AsyncOpenAI, backend: ScriptedBackend) -> None:
    await sdk.chat.completions.create(model=MODEL, messages=[
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "Bye?"}], extra_body={"aft": {"rounds": 1, "proposals": 2}})
    proposer = backend.calls[0].messages
    assert proposer == [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hello there"},
                        {"role": "assistant", "content": "Hi."}, {"role": "user", "content": "Bye?"}]
    assert backend.calls[1].messages[0]["content"].startswith("Be terse.\n\nYou are a helpful aggregator.")


async def test_n_gives_independent_answers(sdk: openai.AsyncOpenAI, backend: ScriptedBackend) -> None:
    completion = await sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], n=2, extra_body={"aft": {"rounds": 1}})
    assert [c.index for c in completion.choices] == [0, 1]
    assert len(backend.calls) == 4


async def test_sdk_streaming_chunks(sdk: openai.AsyncOpenAI, backend: ScriptedBackend) -> None:
    backend.reply = lambda call, i: f"{call.role} answer number {i}"
    stream = await sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True}, extra_body={"aft": {"proposals": 2, "rounds": 1}})
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "aggregator answer number 0"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 2 * 4 + 4
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + 12
    assert backend.calls[-1].stream


async def test_raw_stream_ends_with_done_and_shows_proposals(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=chat_body(
        stream=True, aft={"proposals": 2, "rounds": 2, "include_proposals": True}))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line[len("data: "):] for line in response.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    payloads = [json.loads(e) for e in events[:-1]]
    layers = [p["aft"] for p in payloads if "aft" in p]
    assert [(layer["round"], len(layer["outputs"])) for layer in layers] == [(0, 2), (1, 2)]
    assert all(p["object"] == "chat.completion.chunk" and p["model"] == MODEL for p in payloads)
    assert not any("usage" in p for p in payloads)


async def test_error_mid_stream_is_one_error_event_then_done(
        client: httpx.AsyncClient, backend: ScriptedBackend) -> None:
    from serving.errors import UpstreamTimeout

    backend.fail_on_call, backend.error = 2, UpstreamTimeout("aggregator upstream timed out after 5 s")
    response = await client.post("/v1/chat/completions", json=chat_body(stream=True))
    events = [line[len("data: "):] for line in response.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["message"] == "aggregator upstream timed out after 5 s" and error["type"] == "server_error"


async def test_models_and_health(client: httpx.AsyncClient, backend: ScriptedBackend) -> None:
    models = (await client.get("/v1/models")).json()
    assert models == {"object": "list", "data": [{"id": MODEL, "object": "model", "created": models["data"][0][
        "created"], "owned_by": "aft", "max_model_len": None}]}  # a backend that knows no context
    assert (await client.get(f"/v1/models/{MODEL}")).status_code == 200
    assert (await client.get("/health")).json() == {"status": "ok"}
    backend.context_length = 8192  # as vLLM's engine knows its own, or an upstream declares it
    assert (await client.get("/v1/models")).json()["data"][0]["max_model_len"] == 8192
    assert (await client.get(f"/v1/models/{MODEL}")).json()["max_model_len"] == 8192


async def test_metrics_count_requests_and_tokens(client: httpx.AsyncClient) -> None:
    await client.post("/v1/chat/completions", json=chat_body(aft={"proposals": 2, "rounds": 1}))
    text = (await client.get("/metrics")).text
    assert 'aft_requests_total{status="200",stream="false"} 1.0' in text
    assert 'aft_backend_requests_total{stage="proposals"} 1.0' in text
    assert 'aft_backend_requests_total{stage="final"} 1.0' in text
    assert 'aft_tokens_total{kind="completion",stage="proposals"} 2.0' in text


async def test_openapi_documents_the_chat_request_and_response(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    operation = spec["paths"]["/v1/chat/completions"]["post"]
    assert operation["requestBody"]["required"] is True
    body = spec["components"]["schemas"]["ChatCompletionRequest"]
    assert {"model", "messages"} <= set(body["required"]) and "aft" in body["properties"]
    assert "proposals" in spec["components"]["schemas"]["AftOptions"]["properties"]
    assert "ChatCompletion" in json.dumps(operation["responses"]["200"])
    assert "text/event-stream" in operation["responses"]["200"]["content"]


async def test_context_budget_in_aft_and_metrics(client: httpx.AsyncClient, backend: ScriptedBackend) -> None:
    backend.context_length = 2048  # a token per word
    body = chat_body(max_tokens=16, aft={"proposals": 3, "rounds": 2})
    answer = (await client.post("/v1/chat/completions", json=body)).json()["aft"]["answers"][0]
    assert answer["drafts_capped_to"] == backend.calls[0].sampling.max_tokens < 2048
    assert answer["drafts_trimmed"] == 0
    async with client.stream("POST", "/v1/chat/completions",
                             json={**body, "stream": True, "stream_options": {"include_usage": True}}) as response:
        lines = [line async for line in response.aiter_lines() if line.startswith("data: {")]
    assert json.loads(lines[-1][6:])["aft"]["answers"][0]["drafts_capped_to"] == answer["drafts_capped_to"]
    assert "aft_drafts_capped_total 2.0" in (await client.get("/metrics")).text


async def test_no_room_for_drafts_is_a_400_streamed_or_not(client: httpx.AsyncClient,
                                                          backend: ScriptedBackend) -> None:
    backend.context_length = 2048
    long = chat_body(messages=[{"role": "user", "content": "seven " * 2000}], aft={"rounds": 1})
    for stream in (False, True):
        response = await client.post("/v1/chat/completions", json={**long, "stream": stream})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "context_length_exceeded"
    assert backend.calls == []
    text = (await client.get("/metrics")).text
    assert 'aft_requests_total{status="400",stream="true"} 1.0' in text
    assert "aft_requests_in_flight 0.0" in text


async def test_a_conversation_first_service_sends_the_drafts_after_the_conversation(
        app_factory: Callable[..., FastAPI], backend: ScriptedBackend) -> None:
    """--aggregation-format (or aft.json's format) reaches the pipeline: each aggregation prompt is
    the proposer prompt with the drafts after it."""
    transport = httpx.ASGITransport(app=app_factory(aggregation_format="conversation-first"))
    async with httpx.AsyncClient(transport=transport, base_url="http://aft.test") as client:
        response = await client.post("/v1/chat/completions", json=chat_body(aft={"proposals": 2, "rounds": 1}))
    assert response.status_code == 200
    proposer, aggregator = backend.calls
    assert aggregator.messages[:-1] == proposer.messages
    assert aggregator.messages[-1]["role"] == "user" and "Responses from models:" in aggregator.messages[-1]["content"]
