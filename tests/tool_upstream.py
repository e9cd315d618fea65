"""A scripted OpenAI-compatible upstream that plays a model with one tool, `get_weather`.

It answers as `vllm serve --enable-auto-tool-choice` would: a request whose tool_choice lets the model
call a tool, in a conversation that has no tool result yet, gets a call of get_weather (streamed as
tool-call deltas, the arguments in pieces); a request with tool_choice "none" gets a draft that
proposes the call in words; once the conversation holds the tool's result, the answer quotes it.
Every request body is kept in `bodies`, so tests can see what each round was sent.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

WEATHER_TOOL: dict[str, Any] = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
ARGUMENTS = '{"city": "Paris"}'
CALL_ID = "call_weather_1"
DRAFT = "I would call get_weather for Paris."


def _answer(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """(text, tool calls) this model writes for `body`."""
    messages = body["messages"]
    results = [m["content"] for m in messages if m["role"] == "tool"]
    if results:
        return f"The weather in Paris: {results[-1]}.", []
    if body.get("tools") and body.get("tool_choice", "auto") != "none":
        return "", [{"id": CALL_ID, "type": "function",
                     "function": {"name": "get_weather", "arguments": ARGUMENTS}}]
    return DRAFT if body.get("tools") else "A plain answer.", []


def _completion(body: dict[str, Any]) -> dict[str, Any]:
    text, calls = _answer(body)
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    return {"id": "cmpl-1", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": i, "message": message, "finish_reason": "tool_calls" if calls else "stop"}
                        for i in range(body.get("n", 1))],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}


def _chunks(body: dict[str, Any]) -> list[dict[str, Any]]:
    text, calls = _answer(body)
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    deltas += [{"content": word if i == 0 else " " + word} for i, word in enumerate(text.split(" ")) if text]
    for i, call in enumerate(calls):
        arguments = call["function"]["arguments"]
        half = len(arguments) // 2
        deltas.append({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                       "function": {"name": call["function"]["name"], "arguments": ""}}]})
        deltas += [{"tool_calls": [{"index": i, "function": {"arguments": piece}}]}
                   for piece in (arguments[:half], arguments[half:])]
    chunks: list[dict[str, Any]] = [{"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls" if calls else "stop"}]})
    chunks.append({"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})
    return chunks


class ToolModel:
    """The scripted upstream's handler (tests/scripted_http.upstream)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"object": "list", "data": [{"id": "m", "object": "model"}]})
        if not request.url.path.endswith("/chat/completions"):
            return httpx.Response(404, json={"error": {"message": "not found"}})
        body = json.loads(request.content)
        self.bodies.append(body)
        if not body.get("stream"):
            return httpx.Response(200, json=_completion(body))
        events = "".join(f"data: {json.dumps(c)}\n\n" for c in _chunks(body)) + "data: [DONE]\n\n"
        return httpx.Response(200, stream=httpx.ByteStream(events.encode()),
                              headers={"content-type": "text/event-stream"})
