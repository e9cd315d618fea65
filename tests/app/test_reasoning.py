"""Drafts as reasoning: with aft.reasoning (or the server default) a stream sends every round's
drafts as `reasoning` / `reasoning_content` deltas before the content; a non-streamed answer
carries the same text in its message. Off, the wire output has no trace of it."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI

from app.reasoning import heading
from app.streaming import ChunkRenderer
from serving.backends.base import Generation, Role, Sampling
from serving.errors import UpstreamTimeout
from serving.format import Message
from serving.live_draft import DraftDelta
from tests.app.conftest import ASGIClient, GatedBackend
from tests.fakes import MODEL, Call, ScriptedBackend, chat_body

AFT = {"proposals": 3, "rounds": 2}


def reply(call: Call, i: int) -> str:
    # The same for every sample of a prompt, so that a streamed and a non-streamed answer (whose
    # round 0 is split into requests differently) are made of the same drafts.
    return f"{call.role} says {len(call.messages[0]['content'])}"


class HeldBatch(GatedBackend):
    """While `held`, only `generate` waits: round 0's first draft streams while its batch is held.
    A batch released with `error` set fails with it."""

    stream = ScriptedBackend.stream

    async def generate(self, role: Role, messages: Sequence[Message], sampling: Sampling, n: int) -> Generation:
        generation = await super().generate(role, messages, sampling, n)
        if self.error is not None:
            raise self.error
        return generation


@pytest.fixture
def backend() -> GatedBackend:
    return HeldBatch()


def chunks_of(body: str) -> list[dict[str, Any]]:
    events = [e[len("data: "):] for e in body.split("\n\n") if e.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def deltas(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks if c.get("choices")]


async def post(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/v1/chat/completions", json=chat_body(**body))


def test_reasoning_chunks_are_the_json_of_the_chunk_with_a_heading_per_draft() -> None:
    renderer = ChunkRenderer("chatcmpl-1", "m", 7, 2)
    pieces = [DraftDelta(1, 0, 0, 'a "quote"\n'), DraftDelta(1, 0, 0, "é"), DraftDelta(1, 0, 1, "")]
    texts = [heading(0, 0) + 'a "quote"\n', "é", heading(0, 1)]
    for piece, text in zip(pieces, texts, strict=True):
        expected = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "m",
                    "choices": [{"index": 1, "delta": {"reasoning": text, "reasoning_content": text},
                                 "logprobs": None, "finish_reason": None}]}
        assert renderer.reasoning(piece) == \
            "data: " + json.dumps(expected, ensure_ascii=False, separators=(",", ":")) + "\n\n"
    assert heading(0, 1) == "\n\n### Round 0 · draft 2\n"


async def test_a_stream_sends_every_draft_as_reasoning_before_the_content(
        client: httpx.AsyncClient, backend: GatedBackend) -> None:
    backend.reply = reply
    streamed = chunks_of((await post(client, stream=True, aft={**AFT, "reasoning": True})).text)
    said = [d for d in deltas(streamed) if d.get("reasoning") or d.get("content")]
    reasoning = [d["reasoning"] for d in said if "reasoning" in d]
    assert all(d["reasoning"] == d["reasoning_content"] for d in said if "reasoning" in d)
    first_content = next(i for i, d in enumerate(said) if "content" in d)
    assert all("reasoning" in d for d in said[:first_content])
    assert all("reasoning" not in d for d in said[first_content:])
    text = "".join(reasoning)
    assert text.startswith("### Round 0 · draft 1\nproposer says")
    assert [line for line in text.splitlines() if line.startswith("###")] == [
        f"### Round {r} · draft {k}" for r in (0, 1) for k in (1, 2, 3)]
    assert reasoning[1] == " says"  # the first draft came in pieces, not whole

    answer = (await post(client, aft={**AFT, "reasoning": True})).json()
    message = answer["choices"][0]["message"]
    assert message["reasoning"] == message["reasoning_content"] == text
    assert message["content"] == "".join(d.get("content", "") for d in deltas(streamed))


async def test_the_openai_sdk_finds_the_reasoning_in_model_extra(sdk: openai.AsyncOpenAI,
                                                                 backend: GatedBackend) -> None:
    backend.reply = reply
    extra = {"aft": {**AFT, "reasoning": True}}
    stream = await sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                               stream=True, extra_body=extra)
    streamed = "".join([(chunk.choices[0].delta.model_extra or {}).get("reasoning") or ""
                        async for chunk in stream if chunk.choices])
    completion = await sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                                   extra_body=extra)
    message_extra = completion.choices[0].message.model_extra or {}
    assert streamed and message_extra["reasoning"] == message_extra["reasoning_content"] == streamed


async def test_an_open_webui_request_gets_the_drafts_in_its_reasoning_panel(
        app_factory: Callable[..., FastAPI], backend: GatedBackend) -> None:
    # Open WebUI's request to an OpenAI-compatible connection: its own headers, stream: true,
    # include_usage, no `aft` (the server default turns reasoning on); it shows as reasoning
    # delta.reasoning_content, else delta.reasoning, else delta.thinking.
    backend.reply = reply
    transport = httpx.ASGITransport(app=app_factory(reasoning_default=True))
    async with httpx.AsyncClient(transport=transport, base_url="http://aft.test") as webui:
        response = await webui.post("/v1/chat/completions", headers={
            "Authorization": "Bearer unused", "Content-Type": "application/json",
            "X-OpenWebUI-Chat-Id": "c1"}, json={
            "model": MODEL, "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]})
    chunks = chunks_of(response.text)
    panel = "".join(d.get("reasoning_content") or d.get("reasoning") or d.get("thinking") or ""
                    for d in deltas(chunks))
    assert panel.startswith("### Round 0 · draft 1\n") and "### Round 1 · draft 5\n" in panel
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    assert chunks[-1]["aft"]["answers"][0]["usage_by_round"][0]["requests"] == 2


async def test_a_request_can_turn_off_the_server_default(app_factory: Callable[..., FastAPI]) -> None:
    transport = httpx.ASGITransport(app=app_factory(reasoning_default=True))
    async with httpx.AsyncClient(transport=transport, base_url="http://aft.test") as client:
        streamed = (await post(client, stream=True, aft={**AFT, "reasoning": False})).text
        answer = (await post(client, aft={**AFT, "reasoning": False})).json()
    assert "reasoning" not in streamed and "reasoning" not in answer["choices"][0]["message"]


async def test_off_by_default_the_wire_output_has_no_reasoning(client: httpx.AsyncClient,
                                                               backend: GatedBackend) -> None:
    streamed = (await post(client, stream=True, aft=AFT)).text
    answer = (await post(client, aft=AFT)).json()
    assert "reasoning" not in streamed and "reasoning" not in answer["choices"][0]["message"]
    assert [(c.n, c.stream) for c in backend.calls[:3]] == [(3, False), (3, False), (1, True)]


async def test_plain_generation_has_no_reasoning(client: httpx.AsyncClient) -> None:
    streamed = (await post(client, stream=True, aft={"rounds": 0, "reasoning": True})).text
    answer = (await post(client, aft={"rounds": 0, "reasoning": True})).json()
    assert "reasoning" not in streamed and "reasoning" not in answer["choices"][0]["message"]


async def test_an_error_while_a_draft_streams_is_one_error_event_then_done(
        app_factory: Callable[..., FastAPI], backend: GatedBackend) -> None:
    backend.held = True
    client = ASGIClient(app_factory(), chat_body(stream=True, aft={**AFT, "reasoning": True}))

    def fail_the_batch(message: dict[str, Any]) -> None:
        if b'"reasoning"' in message.get("body", b"") and not backend.go.is_set():
            backend.error = UpstreamTimeout("slow")
            backend.go.set()

    client.on_send = fail_the_batch
    await client.post()
    chunks = chunks_of(client.body.decode())
    assert chunks[-1]["error"]["type"] == "server_error" and chunks[-1]["error"]["message"]
    assert any(d.get("reasoning") for d in deltas(chunks)) and not any(d.get("content") for d in deltas(chunks))


async def test_aft_reasoning_must_be_a_boolean(client: httpx.AsyncClient) -> None:
    response = await post(client, aft={"reasoning": "maybe"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "aft.reasoning"


async def test_a_client_leaving_while_the_first_draft_streams_aborts_the_round(
        app_factory: Callable[..., FastAPI], backend: GatedBackend) -> None:
    backend.held = True
    app = app_factory()
    client = ASGIClient(app, chat_body(stream=True, aft={**AFT, "reasoning": True}))

    def leave_once_reasoning(message: dict[str, Any]) -> None:
        if b'"reasoning"' in message.get("body", b""):
            client.leave.set()

    client.on_send = leave_once_reasoning
    await client.post()
    assert backend.cancelled >= 1 and not backend.go.is_set()  # the held batch was cancelled
    assert [c.role for c in backend.calls] == ["proposer", "proposer"]
    assert app.state.lifecycle.in_flight == 0
    assert 'aft_requests_total{status="disconnected",stream="true"} 1.0' in app.state.metrics.render().decode()


async def test_each_of_n_answers_has_its_own_reasoning(client: httpx.AsyncClient) -> None:
    chunks = chunks_of((await post(client, stream=True, n=2, aft={**AFT, "reasoning": True})).text)
    texts = ["".join(c["choices"][0]["delta"].get("reasoning", "") for c in chunks
                     if c.get("choices") and c["choices"][0]["index"] == i) for i in (0, 1)]
    for text in texts:
        assert text.startswith("### Round 0 · draft 1\n") and text.count("### Round") == 6
