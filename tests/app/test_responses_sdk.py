"""The Responses API as its real clients use it: the OpenAI SDK (`responses.create`, `.stream`, `.parse`)
and the OpenAI Agents SDK with its default model (the Responses API), through the app `aft serve
--backend openai` builds, over a scripted upstream model that calls a tool and honours the schema
(tests/tool_upstream.py)."""

from __future__ import annotations

from typing import Any

import pytest
from agents import Agent, RunConfig, Runner, function_tool
from agents.models.openai_provider import OpenAIProvider

from tests.app.tool_service import Service, service_fixture  # noqa: F401 (the `service` fixture)
from tests.fakes import MODEL
from tests.tool_upstream import ARGUMENTS, CALL_ID, QUESTION, RESULT, Weather
from tests.tool_upstream import RESPONSES_WEATHER_TOOL as TOOL

AFT = {"aft": {"proposals": 2, "rounds": 1}}


@pytest.mark.parametrize("stream", [False, True])
async def test_a_tool_loop_on_the_responses_api(service: Service, stream: bool) -> None:
    async with service(enable_auto_tool_choice=True) as running:
        sdk = running.sdk

        async def turn(items: list[Any]) -> Any:
            if not stream:
                return await sdk.responses.create(model=MODEL, input=items, tools=[TOOL], extra_body=AFT)
            async with sdk.responses.stream(model=MODEL, input=items, tools=[TOOL], extra_body=AFT) as events:
                arguments = "".join([e.delta async for e in events
                                     if e.type == "response.function_call_arguments.delta"])
                final = await events.get_final_response()
            assert arguments == "".join(i.arguments for i in final.output if i.type == "function_call")
            return final

        items: list[Any] = [{"role": "user", "content": QUESTION}]
        first = await turn(items)
        calls = [item for item in first.output if item.type == "function_call"]
        assert [(c.call_id, c.name, c.arguments) for c in calls] == [(CALL_ID, "get_weather", ARGUMENTS)]
        assert first.output_text == "" and first.status == "completed"
        # The client runs the call and sends the conversation back: the output items and the call's result.
        items += [item.model_dump(exclude_none=True) for item in first.output]
        items.append({"type": "function_call_output", "call_id": CALL_ID, "output": RESULT})
        second = await turn(items)
    assert second.output_text == f"The weather in Paris: {RESULT}."
    assert second.usage is not None and second.usage.total_tokens > 0
    final_round = running.model.bodies[-1]
    assert final_round["messages"][-2]["tool_calls"][0]["id"] == CALL_ID
    assert final_round["messages"][-1] == {"role": "tool", "content": RESULT, "tool_call_id": CALL_ID}


@pytest.mark.parametrize("stream", [False, True])
async def test_responses_parse_returns_the_parsed_object(service: Service, stream: bool) -> None:
    async with service() as running:
        sdk = running.sdk
        if stream:
            async with sdk.responses.stream(model=MODEL, input=QUESTION, text_format=Weather,
                                            extra_body=AFT) as events:
                async for _ in events:
                    pass
                response = await events.get_final_response()
        else:
            response = await sdk.responses.parse(model=MODEL, input=QUESTION, text_format=Weather, extra_body=AFT)
    assert response.output_parsed == Weather(city="Paris", summary="Paris")
    # The SDK's strict json_schema reached the answer's round as the chat path's response_format.
    answer_format = running.model.bodies[-1]["response_format"]
    assert (answer_format["type"], answer_format["json_schema"]["strict"]) == ("json_schema", True)
    assert answer_format["json_schema"]["schema"]["required"] == ["city", "summary"]


@function_tool
def get_weather(city: str) -> str:
    """Current weather in a city."""
    return RESULT


@pytest.mark.parametrize("stream", [False, True])
async def test_an_agent_with_a_tool_and_an_output_type_runs_to_its_final_output(service: Service,
                                                                                stream: bool) -> None:
    async with service(enable_auto_tool_choice=True) as running:
        agent = Agent(name="weather", instructions="Answer with the weather.", model=MODEL, tools=[get_weather],
                      output_type=Weather)
        # The provider's default model: the Responses API.
        config = RunConfig(model_provider=OpenAIProvider(openai_client=running.sdk), tracing_disabled=True)
        if stream:
            result = Runner.run_streamed(agent, QUESTION, run_config=config)
            async for _ in result.stream_events():
                pass
        else:
            result = await Runner.run(agent, QUESTION, run_config=config)  # type: ignore[assignment]
    assert result.final_output == Weather(city="Paris", summary="Paris")
    assert running.model.bodies[-1]["messages"][-1]["content"] == RESULT  # the tool's result reached the model
