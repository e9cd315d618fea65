"""Tools through the real `aft serve` process, driven by the OpenAI SDK:
- `--backend openai` over a scripted upstream model that calls a tool (tests/tool_upstream.py): an
  agent loop with one tool completes, streamed and not;
- `--backend openai` over a real vLLM server started without tool flags, as Open WebUI's chat
  page uses it: its builtin tools are answered with text;
- `--backend vllm` over the tiny model with `--enable-auto-tool-choice --tool-call-parser hermes`:
  a request with tools and a conversation with tool-call turns are answered (the tiny model writes
  nonsense, so its answers are text)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from scripts.launch import CPU_ENGINE_ENV, CPU_ENGINE_FLAGS, aft_serve_command, free_port, running
from tests.app.test_open_webui import CHAT_PAGE
from tests.tool_upstream import ARGUMENTS, CALL_ID, WEATHER_TOOL

pytestmark = pytest.mark.integration

AFT = {"aft": {"proposals": 2, "rounds": 1}}
QUESTION: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOL_TURNS: list[Any] = [*QUESTION,
                         {"role": "assistant", "content": None, "tool_calls": [
                             {"id": CALL_ID, "type": "function",
                              "function": {"name": "get_weather", "arguments": ARGUMENTS}}]},
                         {"role": "tool", "tool_call_id": CALL_ID, "content": "sunny, 21 C"}]


@pytest.fixture(scope="module")
def vllm_service(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    command = aft_serve_command(port, "--backend", "vllm", "--model", str(tiny_model), "--served-model-name",
                                "aft", "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
                                *CPU_ENGINE_FLAGS)
    log = tmp_path_factory.mktemp("aft-tools-vllm") / "server.log"
    with running(command, f"http://127.0.0.1:{port}/health", log, env=CPU_ENGINE_ENV):
        yield f"http://127.0.0.1:{port}/v1"


@pytest.fixture
async def sdk(openai_service: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=openai_service, api_key="unused", max_retries=0) as client:
        yield client


async def test_an_agent_loop_with_one_tool_completes(sdk: openai.AsyncOpenAI) -> None:
    messages: list[Any] = list(QUESTION)
    response = await sdk.chat.completions.create(model="aft", messages=messages, tools=[WEATHER_TOOL],
                                                 extra_body=AFT)
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert (call.function.name, call.function.arguments) == ("get_weather", ARGUMENTS)  # type: ignore[union-attr]
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}]
    response = await sdk.chat.completions.create(model="aft", messages=messages, tools=[WEATHER_TOOL],
                                                 extra_body=AFT)
    assert response.choices[0].message.content == "The weather in Paris: sunny, 21 C."


async def test_a_streamed_agent_loop_gets_the_call_as_deltas(sdk: openai.AsyncOpenAI) -> None:
    names, arguments, finish = "", "", None
    async for chunk in await sdk.chat.completions.create(model="aft", messages=QUESTION, tools=[WEATHER_TOOL],
                                                         stream=True, extra_body=AFT):
        for delta in chunk.choices[0].delta.tool_calls or []:
            names += delta.function.name or "" if delta.function else ""
            arguments += delta.function.arguments or "" if delta.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert (names, arguments, finish) == ("get_weather", ARGUMENTS, "tool_calls")
    text = ""
    async for chunk in await sdk.chat.completions.create(model="aft", messages=TOOL_TURNS, tools=[WEATHER_TOOL],
                                                         stream=True, extra_body=AFT):
        text += chunk.choices[0].delta.content or "" if chunk.choices else ""
    assert text == "The weather in Paris: sunny, 21 C."


@pytest.mark.parametrize("stream", [False, True])
async def test_the_in_process_engine_answers_requests_with_tools(vllm_service: str, stream: bool) -> None:
    async with openai.AsyncOpenAI(base_url=vllm_service, api_key="unused", max_retries=0) as client:
        for messages in (QUESTION, TOOL_TURNS):
            kwargs: dict[str, Any] = {"model": "aft", "messages": messages, "tools": [WEATHER_TOOL],
                                      "max_tokens": 8, "extra_body": {"aft": {**AFT["aft"], "proposal_max_tokens": 8}}}
            if not stream:
                response = await client.chat.completions.create(**kwargs)
                assert response.choices[0].finish_reason in ("stop", "length", "tool_calls")
                continue
            finish = None
            async for chunk in await client.chat.completions.create(stream=True, **kwargs):
                finish = (chunk.choices[0].finish_reason if chunk.choices else None) or finish
            assert finish in ("stop", "length", "tool_calls")


@pytest.fixture(scope="module")
def over_vllm_server(vllm_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    command = aft_serve_command(port, "--backend", "openai", "--upstream-url", vllm_server,
                                "--served-model-name", "aft")
    log = tmp_path_factory.mktemp("aft-tools-over-vllm") / "server.log"
    with running(command, f"http://127.0.0.1:{port}/health", log, timeout=60):
        yield f"http://127.0.0.1:{port}/v1"


async def test_open_webuis_chat_page_over_a_vllm_server_without_tool_flags(over_vllm_server: str) -> None:
    # A few of its tools: all 30 rendered by the tiny model's template take more than its 2048-token context.
    async with openai.AsyncOpenAI(base_url=over_vllm_server, api_key="unused", max_retries=0) as client:
        finish = None
        async for chunk in await client.chat.completions.create(
                model="aft", messages=CHAT_PAGE["messages"], tools=CHAT_PAGE["tools"][:3], stream=True,
                stream_options={"include_usage": True}, max_tokens=8,
                extra_body={"aft": {**AFT["aft"], "proposal_max_tokens": 8}}):
            finish = (chunk.choices[0].finish_reason if chunk.choices else None) or finish
        assert finish in ("stop", "length")
