"""Tool calling on the in-process engine, with vLLM's own tool parsers (`vllm serve --tool-call-parser`).

`tool_choice` "auto": the model writes in its own call syntax and the parser finds the calls.
"required" and a named function need no parser: the request's structured output is the JSON schema of
the calls (set by the parser when there is one, as `vllm serve` does, else here, with vLLM's own
schema of the calls), and the JSON that comes out is read as the calls. "none" asks for
nothing: the tools are in the prompt, the answer is text.

vllm is imported lazily, as in serving/backends/vllm.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from serving.backends.base import ResponseFormat, ToolCall, Tools
from serving.errors import InvalidRequest

if TYPE_CHECKING:
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.sampling_params import StructuredOutputsParams
    from vllm.tokenizers import TokenizerLike
    from vllm.tool_parsers.abstract_tool_parser import ToolParser


def load_parser(name: str) -> type[ToolParser]:
    """vLLM's tool parser registered as `name`; ValueError naming the known ones otherwise."""
    from vllm.tool_parsers import ToolParserManager

    try:
        return ToolParserManager.get_tool_parser(name)
    except KeyError as exc:
        known = ", ".join(sorted(ToolParserManager.list_registered()))
        raise ValueError(f"unknown tool-call parser {name!r}; vLLM knows: {known}") from exc


def structured_outputs(response_format: ResponseFormat) -> StructuredOutputsParams:
    """vLLM's constraint for a response format (what `vllm serve` makes of `response_format`:
    structured_outputs_from_response_format); strict or not, the JSON is constrained (compact:
    EngineConfig.compact_json)."""
    from vllm.sampling_params import StructuredOutputsParams

    if response_format.type == "json_object":
        return StructuredOutputsParams(json_object=True)
    return StructuredOutputsParams(json=response_format.schema)


def template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages as chat templates take them: a call's arguments as an object, not JSON text
    (what `vllm serve` does before it renders; the caller's messages are not changed)."""
    out = []
    for message in messages:
        calls = message.get("tool_calls")
        if calls:
            message = {**message, "tool_calls": [
                {**call, "function": {**call["function"], "arguments": _object(call["function"]["arguments"])}}
                for call in calls]}
        out.append(message)
    return out


def _object(arguments: Any) -> Any:
    if not isinstance(arguments, str):
        return arguments
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments  # a template shows it as it came


@dataclass
class ToolRequest:
    """One engine request's tools, with the parser that reads its calls back."""

    request: ChatCompletionRequest
    parser: ToolParser | None
    """None: no parser is configured (only "required" and named choices are then honoured)."""

    def sampling_fields(self) -> dict[str, Any]:
        """SamplingParams fields the parser asked for (structured output, special tokens kept)."""
        fields: dict[str, Any] = {"skip_special_tokens": self.request.skip_special_tokens}
        if self.request.structured_outputs is not None:
            fields["structured_outputs"] = self.request.structured_outputs
        return fields

    def calls(self, text: str) -> tuple[str, tuple[ToolCall, ...]]:
        """(content, calls) of a finished completion."""
        from vllm.renderers.chat_utils import make_tool_call_id

        choice = self.request.tool_choice
        if self.request.structured_outputs is not None and choice != "auto":
            return "", tuple(ToolCall(make_tool_call_id(), name, arguments)
                             for name, arguments in _forced_calls(choice, text))
        if self.parser is None:
            return text, ()
        info = self.parser.extract_tool_calls(text, self.request)
        if not info.tools_called:
            return text, ()
        return info.content or "", tuple(ToolCall(call.id or make_tool_call_id(), call.function.name,
                                                  call.function.arguments) for call in info.tool_calls)


def _forced_calls(choice: Any, text: str) -> list[tuple[str, str]]:
    # Named: the JSON is the function's arguments. Required: a list of {"name", "parameters"}.
    try:
        data = json.loads(text)
        if not isinstance(choice, str):
            return [(choice.function.name, json.dumps(data, ensure_ascii=False))]
        return [(str(call["name"]), json.dumps(call.get("parameters", {}), ensure_ascii=False)) for call in data]
    except (ValueError, LookupError, TypeError) as exc:  # cut short by max_tokens
        raise InvalidRequest("the model's forced tool call is not valid JSON (was max_tokens too small?)",
                             param="tool_choice") from exc


def tool_request(parser: type[ToolParser] | None, tokenizer: TokenizerLike, tools: Tools) -> ToolRequest:
    """The vLLM request that carries `tools` and the parser instance for it (parsers keep state);
    without a parser, `tools.choice` must force a call ("required" or named)."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.sampling_params import StructuredOutputsParams
    from vllm.tool_parsers.utils import get_json_schema_from_tools

    fields: dict[str, Any] = {"model": "aft", "messages": [], "tools": list(tools.definitions),
                              "tool_choice": tools.choice}
    if tools.parallel is not None:
        fields["parallel_tool_calls"] = tools.parallel
    request = ChatCompletionRequest.model_validate(fields)
    instance = parser(tokenizer, list(request.tools or ())) if parser is not None else None
    adjusted = instance.adjust_request(request) if instance is not None else request
    assert isinstance(adjusted, ChatCompletionRequest)
    if tools.choice != "auto" and adjusted.structured_outputs is None:
        # No parser, or one that leaves forcing a call to a structural tag (e.g. hermes): the JSON
        # schema of the calls, as `vllm serve` uses; any model can write that, and `calls` reads it back.
        schema = get_json_schema_from_tools(tool_choice=adjusted.tool_choice or "none",
                                            tools=list(adjusted.tools or ()),
                                            parallel_tool_calls=adjusted.parallel_tool_calls)
        adjusted.structured_outputs = StructuredOutputsParams(json=schema)
    return ToolRequest(adjusted, instance)
