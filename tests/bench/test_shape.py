"""bench.shape: what the soak and the contract tests accept as an answer and as a clean error."""

from __future__ import annotations

import json

from bench.shape import completion_problem, error_problem, json_error_problem, judge_stream

ERROR = {"error": {"message": "upstream failed", "type": "server_error", "param": None, "code": None}}


def sse(*events: object) -> str:
    return "".join(f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events)


def chunk(content: str, finish: str | None = None) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]}


def test_an_openai_error_body_passes_and_anything_else_says_why() -> None:
    assert error_problem(ERROR) is None
    assert json_error_problem(json.dumps(ERROR).encode()) is None
    assert "not JSON" in (json_error_problem(b"Internal Server Error") or "")
    assert "keys" in (error_problem({"error": {"message": "x", "type": "y"}}) or "")
    assert "detail" in (error_problem({"detail": "Not Found"}) or "")
    assert "message" in (error_problem({"error": {**ERROR["error"], "message": ""}}) or "")


def test_a_completion_needs_finished_choices() -> None:
    good = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "4"}, "finish_reason": "stop"}]}
    assert completion_problem(json.dumps(good).encode()) is None
    assert completion_problem(json.dumps({"choices": []}).encode()) is not None
    assert completion_problem(b"{") is not None


def test_streams_end_in_an_answer_or_an_error_then_done() -> None:
    assert judge_stream(sse(chunk("4"), chunk("", "stop"), "[DONE]")) == ("answer", None)
    assert judge_stream(": keep-alive\n\n" + sse(chunk("4"), ERROR, "[DONE]")) == ("error", None)
    verdict, problem = judge_stream(sse(chunk("4"), chunk("", "stop")))
    assert verdict is None and "[DONE]" in (problem or "")
    verdict, problem = judge_stream(sse(chunk("4"), "[DONE]"))
    assert verdict is None and "never finished" in (problem or "")
    verdict, problem = judge_stream(sse({"error": {"message": "boom"}}, "[DONE]"))
    assert verdict is None and "error keys" in (problem or "")
    verdict, problem = judge_stream(sse(ERROR, chunk("4", "stop"), "[DONE]"))
    assert verdict is None and "not followed" in (problem or "")
