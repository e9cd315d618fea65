"""A scripted OpenAI-compatible upstream that plays a model with one tool, `get_weather`.

It answers as `vllm serve --enable-auto-tool-choice` would: a request whose tool_choice lets the model
call a tool, in a conversation that has no tool result yet, gets a call of get_weather (streamed as
tool-call deltas, the arguments in pieces); a request with tool_choice "none" gets a draft that
proposes the call in words; once the conversation holds the tool's result, the answer quotes it.
It honours structured outputs as vLLM does: a named tool_choice is a call of that tool, "required" (once
the weather is known) a call of the first other tool, each with arguments made from the tool's JSON
schema (`example`); a JSON response_format makes the text JSON valid under the schema (json_object:
{"answer": text}). Every request body is kept in `bodies`, so tests can see what each round was sent.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from pydantic import BaseModel

WEATHER_TOOL: dict[str, Any] = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
RESPONSES_WEATHER_TOOL: Any = {"type": "function", **WEATHER_TOOL["function"]}
"""The same tool as the Responses API defines one (no nested "function")."""
ARGUMENTS = '{"city": "Paris"}'
CALL_ID = "call_weather_1"
DRAFT = "I would call get_weather for Paris."
QUESTION = "What is the weather in Paris?"
RESULT = "sunny, 21 C"
"""What a test's get_weather returns."""


class Weather(BaseModel):
    """A structured answer (response_format / text_format / output_type) the scripted model fills."""

    city: str
    summary: str


def example(schema: dict[str, Any], root: dict[str, Any] | None = None) -> Any:
    """A value valid under `schema` (the shapes pydantic and the SDKs write): every property given,
    strings "Paris", integers 21, numbers 21.5, one item per array, the first of a choice."""
    root = schema if root is None else root
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return example(target, root)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [o for o in schema[key] if o.get("type") != "null"] or schema[key]
            return example(options[0], root)
    if "allOf" in schema:
        return example(schema["allOf"][0], root)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    kind = next(k for k in kind if k != "null") if isinstance(kind, list) else kind
    if kind == "object":
        return {name: example(member, root) for name, member in schema.get("properties", {}).items()}
    if kind == "array":
        return [example(schema.get("items", {}), root)]
    return {"string": "Paris", "integer": 21, "number": 21.5, "boolean": True, "null": None}[kind]


def _call(tool: dict[str, Any]) -> dict[str, Any]:
    name = tool["function"]["name"]
    if name == "get_weather":
        return {"id": CALL_ID, "type": "function", "function": {"name": name, "arguments": ARGUMENTS}}
    arguments = example(tool["function"].get("parameters") or {"type": "object"})
    return {"id": f"call_{name}", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def _text(body: dict[str, Any], text: str) -> str:
    shape = body.get("response_format") or {"type": "text"}
    if shape["type"] == "json_schema":
        return json.dumps(example(shape["json_schema"]["schema"]))
    return json.dumps({"answer": text}) if shape["type"] == "json_object" else text


def _answer(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """(text, tool calls) this model writes for `body`."""
    messages = body["messages"]
    results = [m["content"] for m in messages if m["role"] == "tool"]
    tools = body.get("tools") or []
    choice = body.get("tool_choice", "auto")
    if isinstance(choice, dict):
        return "", [_call(next(t for t in tools if t["function"]["name"] == choice["function"]["name"]))]
    if results and choice == "required":
        return "", [_call(next((t for t in tools if t["function"]["name"] != "get_weather"), tools[0]))]
    if results:
        return _text(body, f"The weather in Paris: {results[-1]}."), []
    if tools and choice != "none":
        weather = [t for t in tools if t["function"]["name"] == "get_weather"]
        return "", [_call(weather[0] if weather else tools[0])]
    return _text(body, DRAFT if tools else "A plain answer."), []


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
        self.schema_refusal: dict[str, Any] | None = None
        """When set, the error body a request with a response_format gets, with status 400 (a schema
        the upstream cannot compile)."""

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"object": "list", "data": [{"id": "m", "object": "model"}]})
        if not request.url.path.endswith("/chat/completions"):
            return httpx.Response(404, json={"error": {"message": "not found"}})
        body = json.loads(request.content)
        self.bodies.append(body)
        if self.schema_refusal is not None and body.get("response_format"):
            return httpx.Response(400, json=self.schema_refusal)
        if not body.get("stream"):
            return httpx.Response(200, json=_completion(body))
        events = "".join(f"data: {json.dumps(c)}\n\n" for c in _chunks(body)) + "data: [DONE]\n\n"
        return httpx.Response(200, stream=httpx.ByteStream(events.encode()),
                              headers={"content-type": "text/event-stream"})
