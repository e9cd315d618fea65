"""Structured outputs and forced tool calls on the in-process engine: the real `aft serve --backend vllm`
over the shipped toy checkpoint (its byte-level tokenizer can write any JSON), started with no tool
flags, driven by the clients users run: the OpenAI SDK's `parse`/`stream` and JSON mode, instructor
(TOOLS, JSON_SCHEMA), pydantic-ai (output tool, NativeOutput), the Agents SDK on Chat Completions.

The toy model knows multiplication, not JSON: what it writes inside the schema is its business, but
the engine holds every answer to the schema, so every client gets its object. A schema the engine
cannot compile is a 400 before any draft is generated."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import instructor
import openai
import pytest
from agents import Agent as AgentsAgent
from agents import OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled
from pydantic import BaseModel, Field
from pydantic_ai import Agent, NativeOutput
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from scripts.demo import SHIPPED_MODEL
from scripts.launch import CPU_ENGINE_ENV, CPU_ENGINE_FLAGS, aft_serve_command, free_port, running
from tests.prometheus_text import metric_sum

pytestmark = pytest.mark.integration

QUESTION = [{"role": "user", "content": "What is 31415926 × 3?"}]
AFT = {"aft": {"proposals": 2, "rounds": 1}}


class Product(BaseModel):
    # Bounded, so that the toy's digits end where the schema says (an unbounded integer may run to max_tokens).
    product: int = Field(ge=0, le=999_999_999)


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    command = aft_serve_command(port, "--backend", "vllm", "--model", str(SHIPPED_MODEL), "--served-model-name",
                                "aft", *CPU_ENGINE_FLAGS, "--max-tokens", "96", "--proposal-max-tokens", "48",
                                "--default-proposals", "2", "--default-rounds", "1")
    log = tmp_path_factory.mktemp("aft-structured") / "server.log"
    with running(command, f"http://127.0.0.1:{port}/health", log, env=CPU_ENGINE_ENV):
        yield f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def sdk(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0)


async def test_sdk_parse_and_stream(sdk: openai.AsyncOpenAI) -> None:
    parsed = await sdk.chat.completions.parse(model="aft", messages=QUESTION, response_format=Product,  # type: ignore[arg-type]
                                              extra_body=AFT)
    assert isinstance(parsed.choices[0].message.parsed, Product)
    assert parsed.usage is not None and parsed.usage.completion_tokens > 0
    async with sdk.chat.completions.stream(model="aft", messages=QUESTION, response_format=Product,  # type: ignore[arg-type]
                                           extra_body=AFT) as events:
        final = await events.get_final_completion()
    assert isinstance(final.choices[0].message.parsed, Product)


async def test_json_mode(sdk: openai.AsyncOpenAI) -> None:
    completion = await sdk.chat.completions.create(model="aft", messages=QUESTION,  # type: ignore[arg-type]
                                                   response_format={"type": "json_object"}, extra_body=AFT)
    json.loads(completion.choices[0].message.content or "")


@pytest.mark.parametrize("mode", [instructor.Mode.TOOLS, instructor.Mode.JSON_SCHEMA])
async def test_instructor(sdk: openai.AsyncOpenAI, mode: instructor.Mode) -> None:
    client = instructor.from_openai(sdk, mode=mode)
    product = await client.chat.completions.create(model="aft", response_model=Product, max_retries=0,
                                                   messages=QUESTION)  # type: ignore[arg-type]
    assert 0 <= product.product <= 999_999_999


@pytest.mark.parametrize("native", [False, True])
async def test_pydantic_ai(sdk: openai.AsyncOpenAI, native: bool) -> None:
    model = OpenAIChatModel("aft", provider=OpenAIProvider(openai_client=sdk))
    agent = Agent(model, output_type=NativeOutput(Product) if native else Product)
    # The output tool is forced with tool_choice "required", whose grammar is a list of calls; one output
    # is one call, so parallel calls are off (the engine then holds the list to one item). With them on,
    # the toy may start a second call that max_tokens cuts off: a 400 saying so, not an object.
    result = await agent.run(QUESTION[0]["content"], model_settings={"parallel_tool_calls": False})
    assert isinstance(result.output, Product)


async def test_agents_sdk_on_chat_completions(sdk: openai.AsyncOpenAI) -> None:
    set_tracing_disabled(True)

    @function_tool
    def multiply(a: int, b: int) -> int:
        """a times b."""
        return a * b

    # No tool parser on this server: tool_choice "auto" is answered with text, held to output_type's schema.
    agent = AgentsAgent(name="calculator", instructions="Multiply.", tools=[multiply], output_type=Product,
                        model=OpenAIChatCompletionsModel(model="aft", openai_client=sdk))
    result = await Runner.run(agent, QUESTION[0]["content"])
    assert isinstance(result.final_output, Product)


async def test_a_schema_the_engine_cannot_compile_is_a_400_before_any_draft(url: str) -> None:
    # A valid JSON schema, but xgrammar cannot hold an answer to both branches of an allOf.
    schema = {"allOf": [{"type": "string"}, {"enum": ["yes", "no"]}]}
    before = _engine_requests(url)
    for stream in (False, True):
        response = httpx.post(f"{url}/chat/completions", timeout=60, json={
            "model": "aft", "messages": QUESTION, "stream": stream, **AFT,
            "response_format": {"type": "json_schema", "json_schema": {"name": "Code", "schema": schema}}})
        assert response.status_code == 400, response.text
        error: dict[str, Any] = response.json()["error"]
        assert error["param"] == "response_format" and "not supported by xgrammar" in error["message"], error
    assert _engine_requests(url) == before


async def test_a_forced_call_whose_parameters_the_engine_cannot_compile_is_a_400_naming_tools(url: str) -> None:
    tool = {"type": "function", "function": {"name": "pick", "parameters": {
        "type": "object", "properties": {"x": {"allOf": [{"type": "string"}, {"enum": ["yes", "no"]}]}}}}}
    before = _engine_requests(url)
    response = httpx.post(f"{url}/chat/completions", timeout=60, json={
        "model": "aft", "messages": QUESTION, **AFT, "tools": [tool],
        "tool_choice": {"type": "function", "function": {"name": "pick"}}})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "tools"
    assert _engine_requests(url) == before


def _engine_requests(url: str) -> float:
    """Requests the engine was given (vLLM's own count: one per request, whatever its n)."""
    text = httpx.get(url.removesuffix("/v1") + "/metrics", timeout=10).text
    return metric_sum(text, "vllm:request_params_n_count")
