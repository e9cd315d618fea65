"""Structured outputs and forced tool calls as the real clients ask for them, through the app
`aft serve --backend openai` builds, over a scripted upstream that honours the schema (tests/tool_upstream.py).

Each test is a row of issue 20's table: the OpenAI SDK's `parse` and `stream` helpers, JSON mode,
instructor (TOOLS and JSON_SCHEMA), pydantic-ai (its output tool, and NativeOutput), and the OpenAI
Agents SDK on Chat Completions; every one used to get a 400."""

from __future__ import annotations

import json
from typing import Any

import instructor
import pytest
from agents import Agent as AgentsAgent
from agents import OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled
from pydantic import BaseModel
from pydantic_ai import Agent, NativeOutput
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from tests.app.tool_service import Service, service_fixture  # noqa: F401 (the `service` fixture)
from tests.fakes import MODEL

QUESTION = "What is the weather in Paris?"
AFT = {"aft": {"proposals": 2, "rounds": 1}}


class Weather(BaseModel):
    city: str
    temperature_c: int
    conditions: list[str]


WEATHER = Weather(city="Paris", temperature_c=21, conditions=["Paris"])
"""What the scripted model writes for Weather's schema (tests/tool_upstream.example)."""


def _formats(bodies: list[dict[str, Any]]) -> list[Any]:
    return [body.get("response_format") for body in bodies]


@pytest.mark.parametrize("stream", [False, True])
async def test_sdk_parse_and_stream_return_the_pydantic_model(service: Service, stream: bool) -> None:
    async with service() as running:
        sdk = running.sdk
        messages: Any = [{"role": "user", "content": QUESTION}]
        if stream:
            async with sdk.chat.completions.stream(model=MODEL, messages=messages, response_format=Weather,
                                                   stream_options={"include_usage": True},
                                                   extra_body=AFT) as events:
                deltas = [event.delta async for event in events if event.type == "content.delta"]
                completion = await events.get_final_completion()
            assert Weather.model_validate_json("".join(deltas)) == WEATHER
        else:
            completion = await sdk.chat.completions.parse(model=MODEL, messages=messages, response_format=Weather,
                                                          extra_body=AFT)
    assert completion.choices[0].message.parsed == WEATHER
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    # The SDK sends a strict schema; the answer is held to it, the drafts are free (aft.constrained_drafts).
    drafts, final = _formats(running.model.bodies)
    assert drafts is None
    assert final["type"] == "json_schema" and final["json_schema"]["strict"] is True
    assert final["json_schema"]["schema"]["required"] == ["city", "temperature_c", "conditions"]


@pytest.mark.parametrize("stream", [False, True])
async def test_json_mode_answers_json(service: Service, stream: bool) -> None:
    async with service() as running:
        request: Any = {"model": MODEL, "messages": [{"role": "user", "content": QUESTION}],
                        "response_format": {"type": "json_object"}, "extra_body": AFT}
        if stream:
            content = "".join([chunk.choices[0].delta.content or "" async for chunk in
                               await running.sdk.chat.completions.create(**request, stream=True) if chunk.choices])
        else:
            content = (await running.sdk.chat.completions.create(**request)).choices[0].message.content or ""
    assert json.loads(content) == {"answer": "A plain answer."}
    assert _formats(running.model.bodies) == [None, {"type": "json_object"}]


async def test_aft_constrained_drafts_holds_the_drafts_to_the_schema_too(service: Service) -> None:
    async with service() as running:
        await running.sdk.chat.completions.parse(model=MODEL, messages=[{"role": "user", "content": QUESTION}],
                                                 response_format=Weather,
                                                 extra_body={"aft": {**AFT["aft"], "constrained_drafts": True}})
    drafts, final = _formats(running.model.bodies)
    assert drafts == final and final["type"] == "json_schema"


@pytest.mark.parametrize("mode", [instructor.Mode.TOOLS, instructor.Mode.JSON_SCHEMA])
async def test_instructor_returns_the_response_model(service: Service, mode: instructor.Mode) -> None:
    async with service() as running:
        client = instructor.from_openai(running.sdk, mode=mode)
        weather = await client.chat.completions.create(model=MODEL, response_model=Weather, max_retries=0,
                                                       messages=[{"role": "user", "content": QUESTION}])
    assert weather.model_dump() == WEATHER.model_dump()  # instructor returns its own subclass of Weather
    final = running.model.bodies[-1]
    if mode == instructor.Mode.TOOLS:  # one tool, named: no flag needed
        assert final["tool_choice"] == {"type": "function", "function": {"name": "Weather"}}
    else:
        assert final["response_format"]["json_schema"]["name"] == "Weather"


def _pydantic_ai_model(running: Any) -> OpenAIChatModel:
    return OpenAIChatModel(MODEL, provider=OpenAIProvider(openai_client=running.sdk))


async def test_pydantic_ai_output_tool_with_a_function_tool(service: Service) -> None:
    async with service() as running:
        agent = Agent(_pydantic_ai_model(running), output_type=Weather)
        looked_up: list[str] = []

        @agent.tool_plain
        def get_weather(city: str) -> str:
            """Current weather in a city."""
            looked_up.append(city)
            return "sunny, 21 C"

        result = await agent.run(QUESTION)
    assert result.output == WEATHER and looked_up == ["Paris"]
    # pydantic-ai demands a call (its output tool or get_weather): "required", answered without the flag.
    assert {body["tool_choice"] for body in running.model.bodies if body["tool_choice"] != "none"} == {"required"}


async def test_pydantic_ai_native_output(service: Service) -> None:
    async with service() as running:
        result = await Agent(_pydantic_ai_model(running), output_type=NativeOutput(Weather)).run(QUESTION)
    assert result.output == WEATHER
    assert running.model.bodies[-1]["response_format"]["type"] == "json_schema"


async def test_agents_sdk_on_chat_completions_runs_to_its_final_output(service: Service) -> None:
    set_tracing_disabled(True)  # the SDK would otherwise export traces to api.openai.com
    looked_up: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        looked_up.append(city)
        return "sunny, 21 C"

    async with service(enable_auto_tool_choice=True) as running:
        agent = AgentsAgent(name="weather", instructions="Answer with the weather.", tools=[get_weather],
                            output_type=Weather, model=OpenAIChatCompletionsModel(model=MODEL,
                                                                                  openai_client=running.sdk))
        result = await Runner.run(agent, QUESTION)
    assert result.final_output == WEATHER and looked_up == ["Paris"]
    assert running.model.bodies[-1]["response_format"]["type"] == "json_schema"
