"""The service against its own /openapi.json, in process over the ASGI app with a scripted backend:
schemathesis sends what the schema allows and what it does not (wrong types, missing fields, other
methods), and every response keeps the contract.

Bounded for the default suite: a fixed number of examples per operation, derandomized so that a
failure reproduces, no shrinking (a failure is reported as found).
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, settings
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter, ValidationError
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import status_code_conformance, unsupported_method

from app.main import create_app
from bench.shape import error_problem, json_error_problem, judge_stream
from tests.app.conftest import make_settings
from tests.fakes import MODEL, ScriptedBackend

APP = create_app(make_settings(), backend=ScriptedBackend())
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
# Valid chat requests only: most of what `schema` sends is refused before the pipeline runs.
valid_chat = schemathesis.openapi.from_asgi("/openapi.json", APP).include(path="/v1/chat/completions")
valid_chat.config.generation.update(modes=[GenerationMode.POSITIVE])
valid_responses = schemathesis.openapi.from_asgi("/openapi.json", APP).include(path="/v1/responses")
valid_responses.config.generation.update(modes=[GenerationMode.POSITIVE])
RESPONSE_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)

_REQUESTS = itertools.count()
BOUNDED = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                   phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))


@schema.hook
@valid_chat.hook
@valid_responses.hook
def map_case(_: Any, case: schemathesis.Case) -> schemathesis.Case:
    # Generated model names never match the served one, so nothing would reach the pipeline: half of
    # them (by length, to stay deterministic) name the served model, the rest keep testing the 404.
    # Generated requests rarely ask for a stream: every other one that reaches the pipeline does.
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("model"), str) and len(body["model"]) % 2 == 0:
        case.body = {**body, "model": MODEL}
        if "stream" not in body and next(_REQUESTS) % 2:
            case.body["stream"] = True
    return case


def response_stream_problem(text: str) -> str | None:
    """None when a Responses stream is whole: every event one of the SDK's types, numbered from 0,
    response.created first, and last either response.completed / .incomplete or an error event whose
    `error` is an OpenAI error body."""
    # SSE ends lines at CR or LF only (str.splitlines would also split at U+2028 and friends in the JSON).
    events = [json.loads(line[5:]) for line in text.split("\n") if line.startswith("data:")]
    if not events or events[0]["type"] != "response.created":
        return f"the stream does not begin with response.created: {text[:200]!r}"
    for i, event in enumerate(events):
        try:
            RESPONSE_EVENT.validate_python(event)
        except ValidationError as exc:
            return f"event {i} is not a Responses stream event: {exc}"
        if event["sequence_number"] != i:
            return f"event {i} has sequence_number {event['sequence_number']}"
    last = events[-1]
    if last["type"] == "error":
        return error_problem({"error": last.get("error")})
    if last["type"] not in ("response.completed", "response.incomplete"):
        return f"the stream ends with {last['type']}"
    return None


def openai_shaped(_: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """Every error is an OpenAI error body; every chat stream ends in an answer or an error event, then
    [DONE]; every Responses stream is whole (response_stream_problem)."""
    content_type = response.headers.get("content-type", [""])[0]
    if response.status_code >= 400:
        problem = json_error_problem(response.content)
        assert problem is None, f"{case.method} {case.formatted_path} -> {response.status_code}: {problem}"
    elif content_type.startswith("text/event-stream") and not response.stream_cut_short:
        if case.formatted_path == "/v1/responses":
            problem = response_stream_problem(response.content.decode())
        else:
            _, problem = judge_stream(response.content.decode())
        assert problem is None, f"{case.method} {case.formatted_path} stream: {problem}"


@schema.parametrize()
@BOUNDED
def test_no_server_error_and_every_error_openai_shaped(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=[not_a_server_error, openai_shaped])


@valid_chat.parametrize()
@BOUNDED
def test_valid_chat_requests_answer_or_fail_cleanly(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=[not_a_server_error, openai_shaped])


@valid_responses.parametrize()
@BOUNDED
def test_valid_responses_requests_answer_or_fail_cleanly(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=[not_a_server_error, openai_shaped])


@schema.parametrize()
@BOUNDED
def test_every_status_documented_and_405_names_allow(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=[status_code_conformance, unsupported_method])


AUTHENTICATED = create_app(make_settings(api_keys=["sk-contract"]), backend=ScriptedBackend())


@schema.parametrize()
@settings(BOUNDED, max_examples=10)
def test_without_a_key_every_refusal_openai_shaped(case: schemathesis.Case) -> None:
    # The same requests, none with a key, to a service that wants one (the schema is read from the open app).
    case.call_and_validate(app=AUTHENTICATED, checks=[not_a_server_error, openai_shaped])
