"""Tools through the whole service: the app `aft serve --backend openai` builds, over a scripted
upstream model that calls a tool (tests/tool_upstream.py), driven by the OpenAI SDK as an agent would."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.app.tool_service import Service, service_fixture  # noqa: F401 (the `service` fixture)
from tests.fakes import MODEL
from tests.tool_upstream import ARGUMENTS, CALL_ID, DRAFT, WEATHER_TOOL

QUESTION = "What is the weather in Paris?"
RESULT = "sunny, 21 C"
async def _turn(sdk: openai.AsyncOpenAI, messages: list[ChatCompletionMessageParam],
                stream: bool) -> tuple[str | None, list[dict[str, Any]], str | None]:
    """(content, tool calls, finish_reason) of one assistant turn, joined from the stream when streamed."""
    aft = {"aft": {"proposals": 2, "rounds": 2}}
    if not stream:
        response = await sdk.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL],
                                                     extra_body=aft)
        message = response.choices[0].message
        return (message.content, [call.model_dump() for call in message.tool_calls or []],
                response.choices[0].finish_reason)
    content, finish = "", None
    calls: dict[int, dict[str, Any]] = {}
    async for chunk in await sdk.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL],
                                                         stream=True, extra_body=aft):
        choice = chunk.choices[0]
        content += choice.delta.content or ""
        for delta in choice.delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": None, "type": "function",
                                                  "function": {"name": "", "arguments": ""}})
            call["id"] = delta.id or call["id"]
            if delta.function:
                call["function"]["name"] += delta.function.name or ""
                call["function"]["arguments"] += delta.function.arguments or ""
        finish = choice.finish_reason or finish
    return content or None, [calls[i] for i in sorted(calls)], finish


@pytest.mark.parametrize("stream", [False, True])
async def test_an_agent_loop_with_one_tool_completes(service: Service, stream: bool) -> None:
    async with service(enable_auto_tool_choice=True) as running:
        sdk = running.sdk
        messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": QUESTION}]
        content, calls, finish = await _turn(sdk, messages, stream)
        assert (content, finish) == (None, "tool_calls")
        assert calls == [{"id": CALL_ID, "type": "function",
                          "function": {"name": "get_weather", "arguments": ARGUMENTS}}]
        # The agent runs the tool and sends the conversation back with its result.
        messages += [{"role": "assistant", "content": None, "tool_calls": calls},  # type: ignore[list-item]
                     {"role": "tool", "tool_call_id": CALL_ID, "content": RESULT}]
        content, calls, finish = await _turn(sdk, messages, stream)
        assert (content, calls, finish) == (f"The weather in Paris: {RESULT}.", [], "stop")


async def test_every_round_sees_the_tools_and_the_tool_turns(service: Service) -> None:
    async with service(enable_auto_tool_choice=True) as running:
        sdk, model = running.sdk, running.model
        await _turn(sdk, [{"role": "user", "content": QUESTION}], stream=False)
        first = list(model.bodies)
        messages: list[Any] = [{"role": "user", "content": QUESTION},
                               {"role": "assistant", "content": None, "tool_calls": [
                                   {"id": CALL_ID, "type": "function",
                                    "function": {"name": "get_weather", "arguments": ARGUMENTS}}]},
                               {"role": "tool", "tool_call_id": CALL_ID, "content": RESULT}]
        await _turn(sdk, messages, stream=False)
        second = model.bodies[len(first):]
    # Proposals and the intermediate round write text; the final round may call the tool.
    assert [b["tool_choice"] for b in first] == ["none", "none", "auto"]
    assert all(b["tools"] == [WEATHER_TOOL] for b in first + second)
    # The drafts' proposed call reaches the aggregator as text in its numbered proposals.
    assert f"1. {DRAFT}\n2. {DRAFT}" in first[-1]["messages"][0]["content"]
    # Every round's prompt holds the tool-call turn and the tool's result, unchanged.
    for body in second:
        assert body["messages"][-2:] == [
            {"role": "assistant", "content": "", "tool_calls": messages[1]["tool_calls"]},
            {"role": "tool", "content": RESULT, "tool_call_id": CALL_ID}]


async def test_without_tool_parsing_tools_are_answered_with_text(service: Service) -> None:
    async with service() as running:
        sdk, model = running.sdk, running.model
        content, calls, finish = await _turn(sdk, [{"role": "user", "content": QUESTION}], stream=True)
        assert (calls, finish) == ([], "stop")
        assert content == DRAFT
    assert {b["tool_choice"] for b in model.bodies} == {"none"}


async def test_required_tool_choice_reaches_the_upstream_when_parsing_is_on(service: Service) -> None:
    async with service(enable_auto_tool_choice=True) as running:
        sdk, model = running.sdk, running.model
        response = await sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": QUESTION}], tools=[WEATHER_TOOL],
            tool_choice={"type": "function", "function": {"name": "get_weather"}}, parallel_tool_calls=False,
            extra_body={"aft": {"proposals": 2, "rounds": 1}})
    assert response.choices[0].message.tool_calls
    final = model.bodies[-1]
    assert (final["tool_choice"], final["parallel_tool_calls"]) == (
        {"type": "function", "function": {"name": "get_weather"}}, False)
    assert "parallel_tool_calls" not in model.bodies[0]  # a draft asked for text


async def test_image_content_keeps_its_clear_400(service: Service) -> None:
    async with service() as running:
        sdk, model = running.sdk, running.model
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk.chat.completions.create(model=MODEL, tools=[WEATHER_TOOL], messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])
    error = json.loads(caught.value.response.text)["error"]
    assert error["type"] == "invalid_request_error" and error["param"].startswith("messages.0.content")
    assert model.bodies == []
