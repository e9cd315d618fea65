"""Streamed answers: token chunks are byte for byte json.dumps of the chunk; a silent pipeline is
kept alive with SSE comments; every stream ends with `data: [DONE]` and gives its slot back."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from app.streaming import ChunkRenderer
from serving.backends.base import ToolCallDelta, Usage
from serving.pipeline import AnswerDelta, AnswerDone
from tests.app.conftest import ASGIClient, GatedBackend
from tests.fakes import chat_body


def events_of(body: bytes) -> list[str]:
    return [event for event in body.decode().split("\n\n") if event]


def test_token_chunks_are_the_json_of_the_chunk() -> None:
    renderer = ChunkRenderer("chatcmpl-1", 'm"odel', 7, 2)
    for index, text in [(0, "plain"), (1, 'quote " backslash \\ newline \n tab \t'), (0, "é ☃ \u2028 \x00 😀")]:
        expected = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": 'm"odel',
                    "choices": [{"index": index, "delta": {"content": text}, "logprobs": None,
                                 "finish_reason": None}]}
        assert renderer.token(index, text) == \
            "data: " + json.dumps(expected, ensure_ascii=False, separators=(",", ":")) + "\n\n"


def test_other_chunks_are_the_json_of_the_chunk_too() -> None:
    renderer = ChunkRenderer("chatcmpl-1", "mödel ☃", 7, 1)
    done = AnswerDone(0, "stop", Usage(3, 1, 1), [Usage(3, 1, 1)], early_exit_round=0)
    for chunk in (renderer.roles(), renderer.answer_done(done), renderer.usage(proposals=3, rounds=1, subset=3)):
        payload = json.loads(chunk[len("data: "):])
        assert chunk == "data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")) + "\n\n"


def test_call_pieces_are_openai_tool_call_deltas() -> None:
    renderer = ChunkRenderer("r", "m", 1, 1)
    pieces = [AnswerDelta(0, "", (ToolCallDelta(0, "", "call_1", "get_weather"),)),
              AnswerDelta(0, "", (ToolCallDelta(0, '{"city": '),)), AnswerDelta(0, "", (ToolCallDelta(0, '"Paris"}'),))]
    deltas = [json.loads(renderer.answer_delta(piece)[len("data: "):])["choices"][0]["delta"] for piece in pieces]
    assert deltas == [
        {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                         "function": {"name": "get_weather", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
    ]


def test_usage_adds_up_the_answers_that_ended() -> None:
    renderer = ChunkRenderer("r", "m", 1, 2)
    for index in (1, 0):
        renderer.answer_done(AnswerDone(index, "stop", Usage(3, 1, 1), [Usage(3, 1, 1)]))
    usage = json.loads(renderer.usage(proposals=3, rounds=1, subset=3)[len("data: "):])
    assert usage["choices"] == [] and usage["usage"] == {"prompt_tokens": 6, "completion_tokens": 2,
                                                        "total_tokens": 8}
    assert [a["index"] for a in usage["aft"]["answers"]] == [0, 1]


async def test_a_silent_pipeline_is_kept_alive_with_comments(app_factory: Any, backend: GatedBackend) -> None:
    app = app_factory(stream_keepalive=0.01)
    backend.held = True
    client = ASGIClient(app, chat_body(stream=True, aft={"proposals": 2, "rounds": 1}))
    pings = 0

    def count_pings(message: dict[str, Any]) -> None:
        nonlocal pings
        if message.get("body") == b": keep-alive\n\n":
            pings += 1
            if pings == 2:  # twice silent: now let the drafts finish
                backend.go.set()

    client.on_send = count_pings
    await client.post()
    events = events_of(client.body)
    assert events[0].startswith("data: ") and '"role":"assistant"' in events[0]
    assert events.count(": keep-alive") >= 2
    assert events[-1] == "data: [DONE]"
    assert "".join(json.loads(e[6:])["choices"][0]["delta"].get("content", "")
                   for e in events[:-1] if e.startswith("data: ")) == backend.reply(backend.calls[-1], 0)


async def test_a_stream_runs_to_done_and_gives_its_slot_back(app_factory: Any) -> None:
    app = app_factory()
    client = ASGIClient(app, chat_body(stream=True, stream_options={"include_usage": True}))
    await client.post()
    events = events_of(client.body)
    assert events[-1] == "data: [DONE]" and '"usage"' in events[-2]
    assert app.state.lifecycle.in_flight == 0
    assert 'aft_requests_total{status="200",stream="true"} 1.0' in app.state.metrics.render().decode()


async def test_a_client_that_stops_reading_is_cut_at_the_deadline_without_an_error(
        app_factory: Any, caplog: Any) -> None:
    app = app_factory(request_timeout=0.05)
    client = ASGIClient(app, chat_body(stream=True))
    never = asyncio.Event()

    async def stop_reading(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            await never.wait()  # the connection's buffers are full: the write waits

    client.on_send = stop_reading
    await client.post()
    assert app.state.lifecycle.in_flight == 0
    assert 'aft_requests_total{status="disconnected",stream="true"} 1.0' in app.state.metrics.render().decode()
