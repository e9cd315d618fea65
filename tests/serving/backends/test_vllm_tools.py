"""Tools on the in-process backend without an engine: what the chat template is given (the tiny
model's template renders tools, calls and results), and vLLM's tool parsers reading calls back."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from serving.backends.base import Sampling, StreamDelta, ToolCall, Tools
from serving.format import Message, aggregator_messages, proposer_messages
from tests.tool_upstream import ARGUMENTS, CALL_ID, WEATHER_TOOL

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")

CONVERSATION: list[Message] = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": CALL_ID, "type": "function", "function": {"name": "get_weather", "arguments": ARGUMENTS}}]},
    {"role": "tool", "content": "sunny, 21 C", "tool_call_id": CALL_ID},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture
def backend(tokenizer: Any, tiny_model: Path) -> Any:
    from serving.backends.vllm import VLLMBackend
    from serving.backends.vllm_engine import EngineConfig

    backend = VLLMBackend(EngineConfig(model=str(tiny_model)))
    backend._engine = SimpleNamespace(get_tokenizer=lambda: tokenizer)  # the renderer needs only this
    return backend


@pytest.mark.parametrize("messages", [proposer_messages(CONVERSATION),
                                      aggregator_messages(CONVERSATION, ["draft one", "draft two"])])
async def test_every_round_renders_the_tools_the_call_and_its_result(backend: Any, tokenizer: Any,
                                                                     messages: list[Message]) -> None:
    text = tokenizer.decode(await backend.prompt_ids(messages, Tools((WEATHER_TOOL,), "none")))
    assert f"<tools>{json.dumps([WEATHER_TOOL])}</tools>" in text.replace("\n", "")  # jinja's tojson spacing
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>' in text
    assert "<|tool|>\nsunny, 21 C<|end|>" in text


async def test_a_plain_prompt_renders_as_before(backend: Any, tokenizer: Any) -> None:
    messages = proposer_messages([{"role": "user", "content": "hello"}])
    text = tokenizer.decode(await backend.prompt_ids(messages))
    assert text == "<|bos|><|system|>\n\n<|end|>\n<|user|>\nhello<|end|>\n<|assistant|>\n"


def _request(tokenizer: Any, choice: str | dict[str, Any]) -> Any:
    from serving.backends.vllm_tools import load_parser, tool_request

    return tool_request(load_parser("hermes"), tokenizer, Tools((WEATHER_TOOL,), choice))


def test_auto_calls_are_found_by_the_models_parser(tokenizer: Any) -> None:
    request = _request(tokenizer, "auto")
    text = 'Let me check.<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
    content, calls = request.calls(text)
    assert content == "Let me check."
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert request.calls("Just text.") == ("Just text.", ())


def test_required_and_named_choices_constrain_the_output_and_read_it_back(tokenizer: Any) -> None:
    required = _request(tokenizer, "required")
    assert "structured_outputs" in required.sampling_fields()
    _, calls = required.calls('[{"name": "get_weather", "parameters": {"city": "Paris"}}]')
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})]
    named = _request(tokenizer, {"type": "function", "function": {"name": "get_weather"}})
    _, calls = named.calls('{"city": "Paris"}')
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", '{"city": "Paris"}')]
    assert all(isinstance(c, ToolCall) and c.id for c in calls)


def test_an_unknown_parser_names_the_known_ones() -> None:
    from serving.backends.vllm_tools import load_parser

    with pytest.raises(ValueError, match="hermes"):
        load_parser("no-such-parser")


async def test_the_tool_definitions_count_in_the_prompts_size(backend: Any) -> None:
    messages = proposer_messages(CONVERSATION)
    plain = await backend.prompt_size("proposer", messages)
    with_tools = await backend.prompt_size("proposer", messages, Tools((WEATHER_TOOL,), "none"))
    assert with_tools.tokens > plain.tokens + 20


CALLING = 'Let me check.<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'


def _engine_writing(tokenizer: Any, text: str, piece: int) -> Any:
    """An engine stand-in that streams `text` in pieces of `piece` characters (RequestOutputKind.DELTA)."""
    async def generate(prompt: Any, params: Any, request_id: str) -> AsyncIterator[Any]:
        pieces = [text[i:i + piece] for i in range(0, len(text), piece)]
        for number, chunk in enumerate(pieces, 1):
            finished = number == len(pieces)
            sample = SimpleNamespace(text=chunk, token_ids=[1], finish_reason="stop" if finished else None)
            yield SimpleNamespace(outputs=[sample], finished=finished)

    return SimpleNamespace(get_tokenizer=lambda: tokenizer, generate=generate)


async def test_issue_22_a_streamed_call_arrives_in_pieces_as_from_vllm_serve(backend: Any, tokenizer: Any) -> None:
    # The call was parsed once the answer completed and came whole in the last delta.
    from serving.backends.base import joined_calls
    from serving.backends.vllm_tools import load_parser

    backend._engine, backend._parser, backend._max_model_len = _engine_writing(tokenizer, CALLING, 6), \
        load_parser("hermes"), 4096
    sampling = Sampling(0.7, 1.0, max_tokens=64, tools=Tools((WEATHER_TOOL,), "auto"))
    deltas: list[StreamDelta] = [d async for d in backend.stream("aggregator", proposer_messages(CONVERSATION),
                                                                 sampling)]
    pieces = [piece for delta in deltas for piece in delta.tool_calls]
    with_pieces = [delta for delta in deltas if delta.tool_calls]
    assert len(with_pieces) >= 3  # the name, then the arguments as they are written
    assert pieces[0].id and pieces[0].name == "get_weather" and pieces[0].index == 0
    assert all(piece.id is None and piece.name is None for piece in pieces[1:])
    [call] = joined_calls(pieces)
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})
    assert "".join(d.text for d in deltas) == "Let me check."
    assert deltas[-1].finish_reason == "tool_calls" and deltas[-1].usage is not None
    # Text that calls nothing streams as text.
    backend._engine = _engine_writing(tokenizer, "Just text, no call.", 4)
    plain = [d async for d in backend.stream("aggregator", proposer_messages(CONVERSATION), sampling)]
    assert "".join(d.text for d in plain) == "Just text, no call." and len(plain) > 2
    assert not any(d.tool_calls for d in plain) and plain[-1].finish_reason == "stop"


@pytest.mark.parametrize(("choice", "text"), [
    ("required", '[{"name": "get_weather", "parameters": {"city": "Paris"}}]'),
    ({"type": "function", "function": {"name": "get_weather"}}, '{"city": "Paris"}'),
])
def test_forced_choices_need_no_parser(tokenizer: Any, choice: Any, text: str) -> None:
    # As `vllm serve` without --enable-auto-tool-choice: the calls' JSON schema is the constraint.
    from vllm.tool_parsers.utils import get_json_schema_from_tools

    from serving.backends.vllm_tools import tool_request

    request = tool_request(None, tokenizer, Tools((WEATHER_TOOL,), choice))
    constraint = request.sampling_fields()["structured_outputs"]
    assert constraint.json == get_json_schema_from_tools(request.request.tool_choice, request.request.tools)
    _, calls = request.calls(text)
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})]


def test_a_response_format_becomes_vllms_structured_output() -> None:
    from serving.backends.base import ResponseFormat
    from serving.backends.vllm_tools import structured_outputs

    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert structured_outputs(ResponseFormat("json_schema", schema, "A", strict=False)).json == schema
    assert structured_outputs(ResponseFormat("json_object")).json_object is True
