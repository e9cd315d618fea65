"""The OpenAI Chat Completions wire format as the openai backend speaks it to an upstream: request
bodies, and the usage and tool calls of its answers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from serving.backends.base import Sampling, ToolCall, Usage
from serving.format import Message

_STREAM_OPTIONS = {"include_usage": True}


def dumps(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body)


def request_body(model: str, messages: Sequence[Message], sampling: Sampling, n: int, *,
                 send_max_tokens: bool, stream: bool = False) -> bytes:
    """A chat completion request for `n` samples; max_tokens only with `send_max_tokens`."""
    body: dict[str, Any] = {"model": model, "messages": messages if isinstance(messages, list) else list(messages),
                            "n": n, "temperature": sampling.temperature, "top_p": sampling.top_p}
    if send_max_tokens:
        body["max_tokens"] = sampling.max_tokens
    if sampling.stop:
        body["stop"] = list(sampling.stop)
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    if sampling.presence_penalty:
        body["presence_penalty"] = sampling.presence_penalty
    if sampling.frequency_penalty:
        body["frequency_penalty"] = sampling.frequency_penalty
    if sampling.tools is not None:
        body["tools"] = list(sampling.tools.definitions)
        body["tool_choice"] = sampling.tools.choice
        if sampling.tools.parallel is not None and sampling.tools.choice != "none":
            body["parallel_tool_calls"] = sampling.tools.parallel
    if sampling.response_format is not None:
        body["response_format"] = sampling.response_format.wire()
    if stream:
        body["stream"] = True
        body["stream_options"] = _STREAM_OPTIONS
    return dumps(body)


def usage_of(data: Any) -> Usage:
    # An upstream that reports no usage still cost one request; its token counts are unknown, so 0.
    counts = data if isinstance(data, dict) else {}
    return Usage(counts.get("prompt_tokens") or 0, counts.get("completion_tokens") or 0, requests=1)


def tool_calls_of(calls: Any) -> tuple[ToolCall, ...]:
    """A message's `tool_calls` (absent or null: none)."""
    return tuple(ToolCall(str(c["id"]), str(c["function"]["name"]), str(c["function"].get("arguments") or ""))
                 for c in calls or ())


class CallDeltas:
    """A stream's tool-call deltas joined by index: the first delta of a call names it, later ones
    add pieces of its arguments."""

    def __init__(self) -> None:
        self.calls: dict[int, dict[str, str]] = {}

    def add(self, deltas: Any) -> None:
        for delta in deltas:
            call = self.calls.setdefault(int(delta.get("index", len(self.calls))),
                                         {"id": "", "name": "", "arguments": ""})
            function = delta.get("function") or {}
            call["id"] = delta.get("id") or call["id"]
            call["name"] += function.get("name") or ""
            call["arguments"] += function.get("arguments") or ""

    def joined(self) -> tuple[ToolCall, ...]:
        return tuple(ToolCall(c["id"], c["name"], c["arguments"]) for _, c in sorted(self.calls.items()))
