"""The Responses API through the real `aft serve` process on loopback, driven by its real clients:
- `--backend openai` over a scripted upstream model that calls a tool and honours the schema
  (tests/tool_upstream.py): the OpenAI SDK's `responses.create`, `.stream` (and its final response),
  `.parse(text_format=Model)`, and the Agents SDK's default model (an agent with a function tool and
  an `output_type`) run to its final output;
- `--backend vllm` over the tiny model: a response, streamed and not, and `responses.parse`, whose
  JSON the engine constrains to the schema (the tiny model writes nonsense, within the schema)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import openai
import pytest
from agents import Agent, ModelSettings, RunConfig, Runner, function_tool
from agents.models.openai_provider import OpenAIProvider
from pydantic import BaseModel

from scripts.launch import CPU_ENGINE_ENV, CPU_ENGINE_FLAGS, aft_serve_command, free_port, running
from tests.tool_upstream import ARGUMENTS, CALL_ID, QUESTION, RESULT, Weather
from tests.tool_upstream import RESPONSES_WEATHER_TOOL as TOOL

pytestmark = pytest.mark.integration

AFT = {"aft": {"proposals": 2, "rounds": 1}}


@pytest.fixture
async def sdk(openai_service: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=openai_service, api_key="unused", max_retries=0) as client:
        yield client


async def test_a_tool_loop_with_responses_create_and_stream(sdk: openai.AsyncOpenAI) -> None:
    items: list[Any] = [{"role": "user", "content": QUESTION}]
    first = await sdk.responses.create(model="aft", input=items, tools=[TOOL], extra_body=AFT)
    calls = [item for item in first.output if item.type == "function_call"]
    assert [(c.call_id, c.name, c.arguments) for c in calls] == [(CALL_ID, "get_weather", ARGUMENTS)]
    items += [item.model_dump(exclude_none=True) for item in first.output]
    items.append({"type": "function_call_output", "call_id": CALL_ID, "output": RESULT})
    async with sdk.responses.stream(model="aft", input=items, tools=[TOOL], extra_body=AFT) as stream:
        deltas = [event.delta async for event in stream if event.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(deltas) == final.output_text == f"The weather in Paris: {RESULT}."
    assert final.usage is not None and final.usage.output_tokens > 0


@pytest.mark.parametrize("stream", [False, True])
async def test_responses_parse(sdk: openai.AsyncOpenAI, stream: bool) -> None:
    if stream:
        async with sdk.responses.stream(model="aft", input=QUESTION, text_format=Weather, extra_body=AFT) as events:
            async for _ in events:
                pass
            response = await events.get_final_response()
    else:
        response = await sdk.responses.parse(model="aft", input=QUESTION, text_format=Weather, extra_body=AFT)
    assert response.output_parsed == Weather(city="Paris", summary="Paris")


@function_tool
def get_weather(city: str) -> str:
    """Current weather in a city."""
    return RESULT


async def test_an_agent_with_a_tool_and_an_output_type(sdk: openai.AsyncOpenAI) -> None:
    agent = Agent(name="weather", instructions="Answer with the weather.", model="aft", tools=[get_weather],
                  output_type=Weather)
    config = RunConfig(model_provider=OpenAIProvider(openai_client=sdk), tracing_disabled=True)
    result = await Runner.run(agent, QUESTION, run_config=config)
    assert result.final_output == Weather(city="Paris", summary="Paris")


@pytest.fixture(scope="module")
def vllm_service(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    command = aft_serve_command(port, "--backend", "vllm", "--model", str(tiny_model), "--served-model-name",
                                "aft", *CPU_ENGINE_FLAGS)
    log = tmp_path_factory.mktemp("aft-responses-vllm") / "server.log"
    with running(command, f"http://127.0.0.1:{port}/health", log, env=CPU_ENGINE_ENV):
        yield f"http://127.0.0.1:{port}/v1"


SHORT: Any = {"max_output_tokens": 8, "extra_body": {"aft": {**AFT["aft"], "proposal_max_tokens": 8}}}


async def test_the_in_process_engine_answers_a_response_streamed_and_not(vllm_service: str) -> None:
    async with openai.AsyncOpenAI(base_url=vllm_service, api_key="unused", max_retries=0) as client:
        response = await client.responses.create(model="aft", input="What is 17 + 25?", **SHORT)
        assert response.status in ("completed", "incomplete") and response.output[0].type == "message"
        assert response.usage is not None and response.usage.output_tokens > 0
        async with client.responses.stream(model="aft", input="What is 17 + 25?", **SHORT) as stream:
            events = [event async for event in stream]
    # A response cut by max_output_tokens ends with response.incomplete, as OpenAI's does.
    last = events[-1]
    assert last.type in ("response.completed", "response.incomplete")
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text == last.response.output_text


class Verdict(BaseModel):
    answer: Literal["yes", "no"]


async def test_the_in_process_engine_constrains_responses_parse(vllm_service: str) -> None:
    async with openai.AsyncOpenAI(base_url=vllm_service, api_key="unused", max_retries=0) as client:
        response = await client.responses.parse(model="aft", input="Is 17 + 25 = 42?", text_format=Verdict,
                                                max_output_tokens=64,
                                                extra_body={"aft": {**AFT["aft"], "proposal_max_tokens": 64}})
    assert response.status == "completed"
    assert isinstance(response.output_parsed, Verdict)


async def test_an_agent_with_an_output_type_on_the_in_process_engine(vllm_service: str) -> None:
    # The tiny model cannot be relied on to call a tool; its answer is constrained to the output type.
    async with openai.AsyncOpenAI(base_url=vllm_service, api_key="unused", max_retries=0) as client:
        agent = Agent(name="judge", instructions="Answer yes or no.", model="aft", output_type=Verdict,
                      model_settings=ModelSettings(max_tokens=64, extra_body={
                          "aft": {**AFT["aft"], "proposal_max_tokens": 64}}))
        config = RunConfig(model_provider=OpenAIProvider(openai_client=client), tracing_disabled=True)
        result = await Runner.run(agent, "Is 17 + 25 = 42?", run_config=config)
    assert isinstance(result.final_output, Verdict)
