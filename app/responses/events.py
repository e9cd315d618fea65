"""Pipeline events -> the Responses API's stream events, as Server-Sent Events (`event: TYPE` and
`data: {...}`, every event with its sequence_number, from 0).

The sequence, as OpenAI sends it and the SDK's `responses.stream()` helper accumulates it:
response.created, response.in_progress; with aft.reasoning a reasoning item as the drafts come
(output_item.added, content_part.added, one reasoning_text.delta per piece of a draft, each draft
headed by its round and number; then reasoning_text.done, content_part.done, output_item.done);
the answer's message (output_item.added, content_part.added, output_text.delta per token,
output_text.done, content_part.done, output_item.done), left out when the answer is only calls;
each function call (output_item.added, function_call_arguments.delta, .done, output_item.done);
then response.completed (response.incomplete when max_output_tokens cut the answer) carrying the
whole Response with its usage and `aft`. A failure mid-stream is one `error` event, and the
stream ends.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from json.encoder import encode_basestring
from typing import Any, Protocol

from pydantic import BaseModel

from app.protocol import AftAnswer, AftInfo, AftLayer, ErrorResponse, RoundUsage
from app.reasoning import heading
from app.responses import translate
from app.responses.protocol import (
    FunctionCallOutput,
    OutputItem,
    OutputMessage,
    OutputText,
    ReasoningOutput,
    ReasoningText,
    ResponsesRequest,
    Status,
)
from serving.backends.base import Usage
from serving.live_draft import DraftDelta
from serving.pipeline import AnswerDone, Layer


class CallPiece(Protocol):
    """A piece of a streamed tool call (serving's ToolCallDelta): call `index`'s first piece has its id
    and name, every piece may carry more of its arguments."""

    @property
    def index(self) -> int: ...
    @property
    def arguments(self) -> str: ...
    @property
    def id(self) -> str | None: ...
    @property
    def name(self) -> str | None: ...


class PiecesOfCalls(Protocol):
    """A piece of an answer that carries pieces of its tool calls (an AnswerDelta with tool_calls)."""

    @property
    def index(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def tool_calls(self) -> Sequence[CallPiece]: ...


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)


def aft_answer(event: AnswerDone, layers: list[AftLayer] | None) -> AftAnswer:
    return AftAnswer(
        index=event.index, layers=layers, drafts_capped_to=event.drafts_capped_to,
        drafts_trimmed=event.drafts_trimmed, early_exit_round=event.early_exit_round,
        usage_by_round=[RoundUsage(round=i, requests=u.requests, prompt_tokens=u.prompt_tokens,
                                   completion_tokens=u.completion_tokens, total_tokens=u.total_tokens)
                        for i, u in enumerate(event.usage_by_round)])


class ResponseEvents:
    """Renders one streamed response (one answer) for app.answer_stream.StreamedAnswer."""

    n = 1

    def __init__(self, request: ResponsesRequest, response_id: str, created_at: int, aft: AftInfo, *,
                 include_proposals: bool) -> None:
        self.request, self.request_id, self.created_at = request, response_id, created_at
        self.aft = aft
        self.include_proposals = include_proposals
        self.reasoning_id, self.message_id, self.call_id = translate.item_ids(response_id)
        self.output: list[OutputItem] = []
        """The items done, in order."""
        self.usage = Usage()
        self.finish_reason: str | None = None
        self._sequence = 0
        # The open reasoning item's and message's text, in pieces (joined once, when the item is
        # done: a string grown per token would copy the whole text each time); None: not open.
        self._reasoning: list[str] | None = None
        self._text: list[str] | None = None
        self._messages = 0
        """Messages opened: text after a streamed call is a message of its own (`msg_..._1`)."""
        self._message_id = self.message_id
        self._call: tuple[int, str, str, str, list[str]] | None = None
        """The call streaming now: (its index in the answer, item id, call id, name, argument pieces)."""
        self._calls_streamed = 0
        self._draft = (-1, -1)
        self._delta_parts: tuple[tuple[str, int], str, str] = (("", -1), "", "")
        self._layers: list[AftLayer] = []

    @property
    def answers(self) -> list[AftAnswer]:
        return self.aft.answers

    def _event(self, kind: str, **fields: Any) -> str:
        payload = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return f"event: {kind}\ndata: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"

    def _delta(self, kind: str, item_id: str, text: str, tail: str = "") -> str:
        """A delta event, the hot path (one per token): the JSON around the number and the text is
        rendered once per item, the text escaped as json.dumps would; the bytes are _event's."""
        key = (kind, len(self.output))
        if self._delta_parts[0] != key:
            self._delta_parts = (key, f'event: {kind}\ndata: {{"type":"{kind}","sequence_number":',
                                 f',"item_id":{json.dumps(item_id, ensure_ascii=False)},"output_index":'
                                 f'{len(self.output)},"content_index":0,"delta":')
        _, before, after = self._delta_parts
        self._sequence += 1
        return before + str(self._sequence - 1) + after + encode_basestring(text) + tail + "}\n\n"

    def _item_added(self, item: BaseModel) -> str:
        return self._event("response.output_item.added", output_index=len(self.output), item=_dump(item))

    def _item_done(self, item: OutputItem) -> str:
        self.output.append(item)
        return self._event("response.output_item.done", output_index=len(self.output) - 1, item=_dump(item))

    def _response(self, status: str = "in_progress") -> dict[str, Any]:
        done = status != "in_progress"
        return _dump(translate.response(
            self.request, self.request_id, self.created_at, list(self.output) if done else [],
            finish_reason=self.finish_reason, status=status,
            usage=translate.usage(self.usage.prompt_tokens, self.usage.completion_tokens, self.aft) if done else None,
            aft=self.aft if done else None))

    def opening(self) -> str:
        response = self._response()
        return (self._event("response.created", response=response)
                + self._event("response.in_progress", response=response))

    # ---- the drafts as a reasoning item

    def reasoning(self, event: DraftDelta) -> str:
        out = ""
        if self._reasoning is None:
            self._reasoning = []
            out += self._item_added(ReasoningOutput(id=self.reasoning_id, content=[], status="in_progress"))
            out += self._event("response.content_part.added", item_id=self.reasoning_id,
                               output_index=len(self.output), content_index=0,
                               part={"type": "reasoning_text", "text": ""})
        text = event.text
        if self._draft != (event.round, event.draft):
            self._draft = (event.round, event.draft)
            text = heading(event.round, event.draft) + text
        self._reasoning.append(text)
        return out + self._delta("response.reasoning_text.delta", self.reasoning_id, text)

    def _close_reasoning(self) -> str:
        if self._reasoning is None:
            return ""
        text, self._reasoning = "".join(self._reasoning), None
        index = len(self.output)
        part = ReasoningText(text=text)
        return (self._event("response.reasoning_text.done", item_id=self.reasoning_id, output_index=index,
                            content_index=0, text=text)
                + self._event("response.content_part.done", item_id=self.reasoning_id, output_index=index,
                              content_index=0, part=_dump(part))
                + self._item_done(ReasoningOutput(id=self.reasoning_id, content=[part], status="completed")))

    # ---- the answer: its message, then its calls

    def _open_message(self) -> str:
        if self._text is not None:
            return ""
        self._text = []
        self._message_id = self.message_id if not self._messages else f"{self.message_id}_{self._messages}"
        self._messages += 1
        return (self._close_reasoning() + self._close_call()
                + self._item_added(OutputMessage(id=self._message_id, status="in_progress", content=[]))
                + self._event("response.content_part.added", item_id=self._message_id,
                              output_index=len(self.output), content_index=0, part=_dump(OutputText(text=""))))

    def token(self, index: int, text: str) -> str:
        if not text:
            return ""
        out = self._open_message()
        assert self._text is not None
        self._text.append(text)
        return out + self._delta("response.output_text.delta", self._message_id, text, ',"logprobs":[]')

    def _close_message(self, status: Status) -> str:
        out = self._open_message()
        text, self._text = "".join(self._text or ()), None
        index = len(self.output)
        part = OutputText(text=text)
        return out + (
            self._event("response.output_text.done", item_id=self._message_id, output_index=index,
                        content_index=0, text=text, logprobs=[])
            + self._event("response.content_part.done", item_id=self._message_id, output_index=index,
                          content_index=0, part=_dump(part))
            + self._item_done(OutputMessage(id=self._message_id, status=status, content=[part])))

    def answer_delta(self, event: PiecesOfCalls) -> str:
        """A piece of the answer with pieces of its tool calls, as a backend streams them: its text, then
        each call's first piece opens its function_call item and every piece's arguments are a
        function_call_arguments.delta. Calls stream one after another (as OpenAI's and vLLM's do):
        a call's first piece ends the item before it."""
        out = self.token(event.index, event.text)
        for piece in event.tool_calls:
            if self._call is None or self._call[0] != piece.index:
                out += self._close_reasoning() + self._close_call()
                if self._text is not None:
                    out += self._close_message("completed")
                item_id = f"{self.call_id}_{self._calls_streamed}"
                self._calls_streamed += 1
                self._call = (piece.index, item_id, piece.id or "", piece.name or "", [])
                out += self._item_added(FunctionCallOutput(id=item_id, call_id=piece.id or "", name=piece.name or "",
                                                           arguments="", status="in_progress"))
            if piece.arguments:
                self._call[4].append(piece.arguments)
                out += self._event("response.function_call_arguments.delta", item_id=self._call[1],
                                   output_index=len(self.output), delta=piece.arguments)
        return out

    def _close_call(self) -> str:
        if self._call is None:
            return ""
        (_, item_id, call_id, name, pieces), self._call = self._call, None
        arguments = "".join(pieces)
        return (self._event("response.function_call_arguments.done", item_id=item_id, output_index=len(self.output),
                            name=name, arguments=arguments)
                + self._item_done(FunctionCallOutput(id=item_id, call_id=call_id, name=name, arguments=arguments,
                                                     status="completed")))

    def answer_done(self, event: AnswerDone) -> str:
        self.finish_reason = event.finish_reason
        self.usage.add(event.usage)
        self.aft.answers.append(aft_answer(event, self._layers if self.include_proposals else None))
        out = self._close_reasoning() + self._close_call()
        if self._text is not None or not (event.tool_calls or self._messages):
            out += self._close_message("incomplete" if event.finish_reason == "length" else "completed")
        # Calls that were not streamed (a backend that knows them only whole) come whole now.
        for i, call in enumerate(event.tool_calls[self._calls_streamed:], start=self._calls_streamed):
            item_id = f"{self.call_id}_{i}"
            out += self._item_added(FunctionCallOutput(id=item_id, call_id=call.id, name=call.name, arguments="",
                                                       status="in_progress"))
            index = len(self.output)
            out += (self._event("response.function_call_arguments.delta", item_id=item_id, output_index=index,
                                delta=call.arguments)
                    + self._event("response.function_call_arguments.done", item_id=item_id, output_index=index,
                                  name=call.name, arguments=call.arguments)
                    + self._item_done(FunctionCallOutput(id=item_id, call_id=call.id, name=call.name,
                                                         arguments=call.arguments, status="completed")))
        return out

    def layer(self, index: int, layer: Layer) -> str:
        """Kept for the answer's `aft` in response.completed (with aft.include_proposals)."""
        self._layers.append(AftLayer(round=layer.round, outputs=layer.outputs))
        return ""

    def closing(self) -> str:
        response = self._response("completed")
        kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        return self._event(kind, response=response)

    def failed(self, body: ErrorResponse) -> str:
        # OpenAI's `error` event (type, code, message, param) with the error body beside them too:
        # the SDK raises an APIError with its message for an event that carries `error`.
        error = body.error.model_copy(update={"param": translate.responses_param(body.error.param)})
        return self._event("error", code=error.code, message=error.message, param=error.param,
                           error=error.model_dump())
