"""The edge between the two APIs: a Responses request becomes the ChatCompletionRequest the chat path
takes, and the chat path's answer becomes a Response. Everything else (checks, admission, the
pipeline) is the chat path's, unchanged.

input -> messages: `instructions` first as a system message; a string is one user message; a
message item keeps its role and text; `function_call` items join the assistant turn before them
as its tool calls (consecutive calls are one turn, as chat templates expect); a
`function_call_output` is a `tool` message; reasoning items are left out.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from app.protocol import AftInfo, ChatCompletion, ChatCompletionRequest
from app.responses.protocol import (
    FunctionCallInput,
    FunctionCallOutput,
    FunctionCallOutputInput,
    IncompleteDetails,
    InputMessage,
    OutputItem,
    OutputMessage,
    OutputText,
    OutputTokensDetails,
    ReasoningOutput,
    ReasoningText,
    ResponsesRequest,
    ResponsesResponse,
    ResponseUsage,
    Status,
    TextConfig,
    TextFormatJSONObject,
    TextFormatJSONSchema,
    TextFormatText,
)
from serving.errors import InvalidRequest

# A chat request's parameter -> the Responses request's, for errors the chat path raises.
_PARAMS = {"messages": "input", "max_completion_tokens": "max_output_tokens", "max_tokens": "max_output_tokens",
           "response_format.json_schema": "text.format", "response_format": "text.format"}


def responses_param(param: str | None) -> str | None:
    """The Responses request's name for a parameter the chat path named `param`."""
    if param is None:
        return None
    for chat, ours in _PARAMS.items():
        if param == chat or param.startswith(chat + "."):
            return ours if chat == "messages" else ours + param[len(chat):]
    return param


def in_responses_terms(exc: InvalidRequest) -> None:
    """Rename, in place, the chat parameter a refusal from the chat path names (its `param`, and the
    dotted names its message quotes) to the Responses request's."""
    exc.param = responses_param(exc.param)
    for chat in ("response_format.json_schema", "response_format", "max_completion_tokens"):
        exc.message = exc.message.replace(chat, _PARAMS[chat])
    exc.args = (exc.message,)


def _messages(request: ResponsesRequest) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if request.instructions:
        messages.append({"role": "system", "content": request.instructions})
    if isinstance(request.input, str):
        return [*messages, {"role": "user", "content": request.input}]
    for item in request.input:
        last = messages[-1] if messages and messages[-1]["role"] == "assistant" else None
        if isinstance(item, FunctionCallInput):
            call = {"id": item.call_id, "type": "function",
                    "function": {"name": item.name, "arguments": item.arguments}}
            if last is not None:
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif isinstance(item, FunctionCallOutputInput):
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.text()})
        elif isinstance(item, InputMessage):
            messages.append({"role": item.role, "content": item.text()})
        # A reasoning item: left out.
    return messages


def response_format(text: TextConfig | None) -> dict[str, Any] | None:
    """`text.format` in the chat request's `response_format` shape (OpenAI's Chat Completions)."""
    match text.format if text else None:
        case TextFormatJSONSchema() as schema:
            spec = {"name": schema.name, "schema": schema.schema_, "description": schema.description,
                    "strict": schema.strict}
            return {"type": "json_schema", "json_schema": {k: v for k, v in spec.items() if v is not None}}
        case TextFormatJSONObject():
            return {"type": "json_object"}
        case TextFormatText() | None:
            return None
    return None


def chat_request(request: ResponsesRequest) -> ChatCompletionRequest:
    """The chat request that asks the pipeline for what `request` asks. Raises InvalidRequest, naming the
    Responses parameter, for what the Responses API defines and this service does not provide."""
    refused = request.unsupported()
    if refused:
        raise InvalidRequest(refused[1], param=refused[0], code="unsupported_parameter")
    messages = _messages(request)
    if all(m["role"] in ("system", "developer") for m in messages):
        raise InvalidRequest("input holds no message to answer", param="input")
    choice = request.tool_choice
    body: dict[str, Any] = {
        "model": request.model, "messages": messages, "stream": request.stream,
        "temperature": request.temperature, "top_p": request.top_p,
        "max_completion_tokens": request.max_output_tokens, "parallel_tool_calls": request.parallel_tool_calls,
        "response_format": response_format(request.text), "user": request.user, "aft": request.aft,
        "tools": [{"type": "function", "function": tool.model_dump(exclude={"type"}, exclude_none=True)}
                  for tool in request.tools] if request.tools else None,
        "tool_choice": {"type": "function", "function": {"name": choice.name}}
        if choice is not None and not isinstance(choice, str) else choice,
    }
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:  # a safety net: the Responses models admit only what translates
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(f"{where}: {first['msg']}", param=responses_param(where)) from None


# ---- the answer back out ---------------------------------------------------------------------------

def item_ids(response_id: str) -> tuple[str, str, str]:
    """The ids of a response's (reasoning, message, function call) items; a call's id adds its number."""
    rid = response_id.removeprefix("resp_")
    return f"rs_{rid}", f"msg_{rid}", f"fc_{rid}"


def usage(prompt_tokens: int, completion_tokens: int, aft: AftInfo) -> ResponseUsage:
    """Every round's tokens, as on chat; the drafts' (every round's before the answer's) as reasoning tokens."""
    drafts = sum(u.completion_tokens for answer in aft.answers for u in answer.usage_by_round[:-1])
    return ResponseUsage(input_tokens=prompt_tokens, output_tokens=completion_tokens,
                         total_tokens=prompt_tokens + completion_tokens,
                         output_tokens_details=OutputTokensDetails(reasoning_tokens=drafts))


def response(request: ResponsesRequest, response_id: str, created_at: int, output: list[OutputItem], *,
             finish_reason: str | None = None, usage: ResponseUsage | None = None,
             aft: AftInfo | None = None, status: str = "completed") -> ResponsesResponse:
    """The Response object: `output`, the request's settings echoed; an answer cut by max_output_tokens
    (finish_reason "length") is incomplete."""
    incomplete = finish_reason == "length"
    return ResponsesResponse.model_validate({
        "id": response_id, "created_at": created_at, "model": request.model, "output": output,
        "status": "incomplete" if incomplete else status,
        "incomplete_details": IncompleteDetails(reason="max_output_tokens") if incomplete else None,
        "instructions": request.instructions, "max_output_tokens": request.max_output_tokens,
        "parallel_tool_calls": request.parallel_tool_calls is not False,
        "temperature": request.temperature, "top_p": request.top_p,
        "tool_choice": request.tool_choice or "auto", "tools": request.tools or [],
        "text": request.text or TextConfig(format=TextFormatText(type="text")),
        "metadata": request.metadata or {}, "user": request.user, "usage": usage, "aft": aft})


def from_completion(request: ResponsesRequest, response_id: str, created_at: int,
                    completion: ChatCompletion) -> ResponsesResponse:
    """The Response for the chat path's answer to `chat_request(request)` (one choice)."""
    choice = completion.choices[0]
    message = choice.message
    status: Status = "incomplete" if choice.finish_reason == "length" else "completed"
    reasoning_id, message_id, call_id = item_ids(response_id)
    output: list[OutputItem] = []
    if message.reasoning:
        output.append(ReasoningOutput(id=reasoning_id, content=[ReasoningText(text=message.reasoning)],
                                      status="completed"))
    calls = message.tool_calls or []
    if message.content or not calls:
        output.append(OutputMessage(id=message_id, status=status, content=[OutputText(text=message.content or "")]))
    output += [FunctionCallOutput(id=f"{call_id}_{i}", call_id=call.id, name=call.function.name,
                                  arguments=call.function.arguments, status="completed")
               for i, call in enumerate(calls)]
    aft = completion.aft
    assert aft is not None  # the chat path always reports its pipeline
    return response(request, response_id, created_at, output, finish_reason=choice.finish_reason,
                    usage=usage(completion.usage.prompt_tokens, completion.usage.completion_tokens, aft), aft=aft)
