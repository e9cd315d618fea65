"""Pipeline events -> Server-Sent Events in OpenAI's chat.completion.chunk shape.

Every choice's first chunk carries the role; each answer's last chunk carries its
finish_reason; with stream_options.include_usage a final chunk with empty choices carries
the usage; `data: [DONE]` always ends the stream, after an error event if one occurred.

Token chunks are the hot path (one per token per answer): their JSON around the text is
rendered once per stream, and each token only escapes its text (the C encoder json itself
uses) between a prefix and a suffix; the bytes are what json.dumps of the chunk dict would
give. Rarer chunks (role, finish, usage, drafts, errors) are dicts dumped by orjson, whose bytes are
json.dumps's (compact, non-ASCII as it is) at a tenth of its cost.
"""

from __future__ import annotations

from json.encoder import encode_basestring
from typing import Any

import orjson

from app.protocol import ErrorResponse
from app.reasoning import FIELDS, heading
from serving.backends.base import Usage
from serving.live_draft import DraftDelta
from serving.pipeline import AnswerDelta, AnswerDone, Layer

DONE = "data: [DONE]\n\n"


def _sse(payload: dict[str, Any]) -> str:
    return "data: " + orjson.dumps(payload).decode() + "\n\n"


def usage_dict(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens}


def rounds_usage(usage_by_round: list[Usage]) -> list[dict[str, int]]:
    return [{"round": i, "requests": u.requests, **usage_dict(u)} for i, u in enumerate(usage_by_round)]


class ChunkRenderer:
    """Renders one stream's events; it keeps the usage of the answers that ended. With `summary`
    (proposals, rounds, subset: stream_options.include_usage) the stream ends with the usage chunk."""

    def __init__(self, request_id: str, model: str, created: int, n: int,
                 summary: tuple[int, int, int] | None = None) -> None:
        self.request_id = request_id
        self.n = n
        self.summary = summary
        self.head = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model}
        # 'data: {...head,"choices":[{"index":i,"delta":{"content":' + text + '},"logprobs":null,...}]}'
        opening = _sse(self.head)[:-3]
        self._token_prefixes = [f'{opening},"choices":[{{"index":{i},"delta":{{"content":' for i in range(n)]
        self._token_suffix = '},"logprobs":null,"finish_reason":null}]}\n\n'
        # Reasoning chunks: the same text under each of FIELDS; a draft's first piece carries its heading.
        self._reasoning_prefixes = [f'{opening},"choices":[{{"index":{i},"delta":{{"{FIELDS[0]}":' for i in range(n)]
        self._reasoning_middle = f',"{FIELDS[1]}":'
        self._drafts_begun = [(-1, -1)] * n
        self.total = Usage()
        self.answers: list[dict[str, Any]] = []

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> str:
        return _sse({**self.head, "choices": choices, **extra})

    @staticmethod
    def _choice(index: int, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    def opening(self) -> str:
        return self.roles()

    def roles(self) -> str:
        return "".join(self._chunk([self._choice(i, {"role": "assistant", "content": ""})]) for i in range(self.n))

    def token(self, index: int, text: str) -> str:
        return self._token_prefixes[index] + encode_basestring(text) + self._token_suffix

    def reasoning(self, event: DraftDelta) -> str:
        text = event.text
        if self._drafts_begun[event.index] != (event.round, event.draft):
            self._drafts_begun[event.index] = (event.round, event.draft)
            text = heading(event.round, event.draft) + text
        escaped = encode_basestring(text)
        return (self._reasoning_prefixes[event.index] + escaped + self._reasoning_middle + escaped
                + self._token_suffix)

    def answer_delta(self, event: AnswerDelta) -> str:
        """A piece of the answer that carries pieces of its tool calls (and maybe text), in OpenAI's
        shape: a call's first piece has its index, id, type and name, later ones its index and more
        arguments (clients join them by index)."""
        calls = []
        for piece in event.tool_calls:
            function: dict[str, str] = {}
            if piece.name is not None:
                function["name"] = piece.name
            if piece.arguments or piece.name is not None:
                function["arguments"] = piece.arguments
            call: dict[str, Any] = {"index": piece.index}
            if piece.id is not None:
                call.update(id=piece.id, type="function")
            call["function"] = function
            calls.append(call)
        delta: dict[str, Any] = {"content": event.text} if event.text else {}
        delta["tool_calls"] = calls
        return self._chunk([self._choice(event.index, delta)])

    def answer_done(self, event: AnswerDone) -> str:
        self.total.add(event.usage)
        answer: dict[str, Any] = {"index": event.index, "usage_by_round": rounds_usage(event.usage_by_round),
                                  "drafts_trimmed": event.drafts_trimmed}
        # As in a non-streamed body, a field that is null is left out.
        if event.drafts_capped_to is not None:
            answer["drafts_capped_to"] = event.drafts_capped_to
        if event.early_exit_round is not None:
            answer["early_exit_round"] = event.early_exit_round
        self.answers.append(answer)
        return self._chunk([self._choice(event.index, {}, event.finish_reason)])

    def layer(self, index: int, layer: Layer) -> str:
        return self._chunk([], aft={"index": index, "round": layer.round, "outputs": layer.outputs})

    def usage(self, proposals: int, rounds: int, subset: int) -> str:
        answers = sorted(self.answers, key=lambda a: a["index"])
        return self._chunk([], usage=usage_dict(self.total),
                           aft={"proposals": proposals, "rounds": rounds, "subset": subset, "answers": answers})

    def closing(self) -> str:
        return (self.usage(*self.summary) if self.summary else "") + DONE

    def failed(self, body: ErrorResponse) -> str:
        return self.error(body) + DONE

    @staticmethod
    def error(body: ErrorResponse) -> str:
        return _sse(body.model_dump())
