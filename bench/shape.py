"""What an answer and an error look like to an OpenAI client, as the soak (bench/soak.py) and the
contract tests (tests/contract) judge them.

An error body is {"error": {"message", "type", "param", "code"}}: message and type non-empty
strings, param and code strings or null. A streamed response is SSE whose last event is
`data: [DONE]`; before it either chunks that end every choice with a finish_reason (an answer)
or one error event in the shape above (a clean error).
"""

from __future__ import annotations

import json
from typing import Literal

Verdict = tuple[Literal["answer", "error"], None] | tuple[None, str]
"""("answer", None), ("error", None) or (None, what is wrong)."""


def error_problem(payload: object) -> str | None:
    """None when `payload` is an OpenAI error body, else what is wrong with it."""
    if not isinstance(payload, dict) or set(payload) != {"error"} or not isinstance(payload["error"], dict):
        return f"not an OpenAI error body: {str(payload)[:200]}"
    error = payload["error"]
    if set(error) != {"message", "type", "param", "code"}:
        return f"error keys {sorted(error)}, expected code, message, param, type"
    for key in ("message", "type"):
        if not isinstance(error[key], str) or not error[key]:
            return f"error.{key} is {error[key]!r}, expected a non-empty string"
    for key in ("param", "code"):
        if error[key] is not None and not isinstance(error[key], str):
            return f"error.{key} is {error[key]!r}, expected a string or null"
    return None


def json_error_problem(body: bytes) -> str | None:
    """None when the bytes are an OpenAI error body in JSON, else what is wrong."""
    try:
        payload = json.loads(body)
    except ValueError:
        return f"error body is not JSON: {body[:200]!r}"
    return error_problem(payload)


def completion_problem(body: bytes) -> str | None:
    """None when the bytes are a chat completion with at least one finished choice."""
    try:
        payload = json.loads(body)
        choices = payload["choices"]
        if choices and all(c["finish_reason"] and isinstance(c["message"]["content"], str) for c in choices):
            return None
    except (ValueError, KeyError, TypeError):
        pass
    return f"not a chat completion: {body[:200]!r}"


def judge_stream(text: str) -> Verdict:
    """Judge a whole text/event-stream body (see the module docstring)."""
    data = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
    if not data or data[-1] != "[DONE]":
        return None, f"the stream does not end with data: [DONE] (last: {data[-1][:200] if data else None!r})"
    if data.count("[DONE]") != 1:
        return None, "data: [DONE] more than once"
    unfinished: set[int] = set()
    finished: set[int] = set()
    for i, item in enumerate(data[:-1]):
        try:
            event = json.loads(item)
        except ValueError:
            return None, f"event {i} is not JSON: {item[:200]!r}"
        if isinstance(event, dict) and "error" in event:
            problem = error_problem(event)
            if problem is not None:
                return None, f"event {i}: {problem}"
            if i != len(data) - 2:
                return None, f"error event {i} is not followed by data: [DONE]"
            return "error", None
        for choice in event.get("choices") or [] if isinstance(event, dict) else []:
            (finished if choice.get("finish_reason") else unfinished).add(choice.get("index", 0))
    if not finished or unfinished - finished:
        return None, f"choices {sorted(unfinished - finished)} never finished"
    return "answer", None
