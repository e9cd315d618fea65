"""The scripted tool model of tests/tool_upstream.py, honouring `response_format` as an OpenAI-compatible
server with structured outputs does: while a call of get_weather is due it calls it; otherwise a request
with a JSON response_format is answered with JSON that fits its schema (`example`), every string the
last tool result (or "Paris" before there is one). Streamed requests get the JSON in word pieces."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.tool_upstream import ToolModel


def example(schema: dict[str, Any], text: str, defs: dict[str, Any] | None = None) -> Any:
    """A value valid under `schema` (the subset pydantic's schemas use), every string `text`."""
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return example(defs[schema["$ref"].rsplit("/", 1)[-1]], text, defs)
    if "enum" in schema:
        return schema["enum"][0]
    if "anyOf" in schema:
        return example(schema["anyOf"][0], text, defs)
    kind = schema.get("type", "object")
    if kind == "object":
        return {name: example(sub, text, defs) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [example(schema.get("items", {}), text, defs)]
    return {"string": text, "integer": 21, "number": 21.5, "boolean": True, "null": None}[kind]


def _call_due(body: dict[str, Any]) -> bool:
    results = [m for m in body["messages"] if m["role"] == "tool"]
    return bool(body.get("tools")) and body.get("tool_choice", "auto") != "none" and not results


class SchemaToolModel(ToolModel):
    def __call__(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/chat/completions"):
            return super().__call__(request)
        body = json.loads(request.content)
        fmt = body.get("response_format") or {"type": "text"}
        if fmt["type"] == "text" or _call_due(body):
            return super().__call__(request)
        self.bodies.append(body)
        results = [m["content"] for m in body["messages"] if m["role"] == "tool"]
        schema = fmt["json_schema"]["schema"] if fmt["type"] == "json_schema" else {"type": "object", "properties": {
            "answer": {"type": "string"}}}
        text = json.dumps(example(schema, results[-1] if results else "Paris"))
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        if not body.get("stream"):
            return httpx.Response(200, json={
                "id": "cmpl-1", "object": "chat.completion", "model": body["model"], "usage": usage,
                "choices": [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                            for i in range(body.get("n", 1))]})
        pieces = [{"role": "assistant", "content": ""}] + [
            {"content": word if i == 0 else " " + word} for i, word in enumerate(text.split(" "))]
        chunks: list[dict[str, Any]] = [{"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in pieces]
        chunks += [{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}, {"choices": [], "usage": usage}]
        events = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        return httpx.Response(200, stream=httpx.ByteStream(events.encode()),
                              headers={"content-type": "text/event-stream"})
