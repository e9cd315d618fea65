"""Pipeline events -> Server-Sent Events in OpenAI's chat.completion.chunk shape.

Chunks leave as the backend produces tokens. Every choice's first chunk carries
the role and is sent at once (all of them as one piece), before the drafts are done
(so clients see the request accepted); each answer's last chunk carries its finish_reason; with
stream_options.include_usage a final chunk with empty choices carries the usage;
`data: [DONE]` always ends the stream, after an error event if one occurred.

Token chunks are the hot path (one per token per answer): their JSON around the text
is rendered once per stream, and each token only escapes its text (the C encoder json
itself uses) between a prefix and a suffix; the bytes are what json.dumps of the chunk
dict would give. Rarer chunks (role, finish, usage, drafts, errors) are dumped as dicts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Callable
from json.encoder import encode_basestring
from typing import Any

from app.errors import status_and_body
from serving.backends.base import Usage
from serving.errors import AFTError
from serving.pipeline import AnswerDelta, AnswerDone, Event, LayerDone

logger = logging.getLogger(__name__)

DONE = "data: [DONE]\n\n"


def _sse(payload: dict[str, Any]) -> str:
    return "data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")) + "\n\n"


def usage_dict(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens}


def rounds_usage(usage_by_round: list[Usage]) -> list[dict[str, int]]:
    return [{"round": i, "requests": u.requests, **usage_dict(u)} for i, u in enumerate(usage_by_round)]


async def sse_stream(events: AsyncGenerator[Event, None], *, request_id: str, model: str, created: int, n: int,
                     proposals: int, rounds: int, include_usage: bool, include_proposals: bool,
                     on_first_token: Callable[[], None] | None = None,
                     on_answer: Callable[[AnswerDone], None] | None = None,
                     on_error: Callable[[Exception], None] | None = None,
                     on_close: Callable[[bool], None] | None = None) -> AsyncGenerator[str, None]:
    """Render pipeline events as SSE lines; an error becomes one error event, then [DONE].

    When the stream ends, early or not, the pipeline's events are closed (so the backend aborts
    what it still runs) and `on_close(finished)` runs (finished: [DONE] was sent)."""
    head = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model}
    # 'data: {...head,"choices":[{"index":i,"delta":{"content":' + text + '},"logprobs":null,...}]}'
    opening = _sse(head)[:-3]
    token_prefixes = [f'{opening},"choices":[{{"index":{i},"delta":{{"content":' for i in range(n)]
    token_suffix = '},"logprobs":null,"finish_reason":null}]}\n\n'

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
        return _sse({**head, "choices": choices, **extra})

    def choice(index: int, delta: dict[str, str], finish_reason: str | None = None) -> dict[str, Any]:
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    total = Usage()
    by_answer: list[dict[str, Any]] = []
    first_token = True
    finished = False
    # The last answer's finish chunk, the usage chunk and [DONE] leave as one piece: one write and
    # one wakeup of the client at the end of the answer instead of three.
    tail = ""
    try:
        try:
            yield "".join(chunk([choice(i, {"role": "assistant", "content": ""})]) for i in range(n))
            async for event in events:
                if isinstance(event, AnswerDelta):
                    if first_token and on_first_token is not None:
                        on_first_token()
                    first_token = False
                    yield token_prefixes[event.index] + encode_basestring(event.text) + token_suffix
                elif isinstance(event, AnswerDone):
                    total.add(event.usage)
                    if on_answer is not None:
                        on_answer(event)
                    by_answer.append({"index": event.index, "usage_by_round": rounds_usage(event.usage_by_round)})
                    finish = chunk([choice(event.index, {}, event.finish_reason)])
                    if len(by_answer) < n:  # other answers still run: this one's end is news now
                        yield finish
                    else:
                        tail = finish
                elif isinstance(event, LayerDone) and include_proposals:
                    layer = event.layer
                    yield chunk([], aft={"index": event.index, "round": layer.round, "outputs": layer.outputs})
            if include_usage:
                answers = sorted(by_answer, key=lambda a: a["index"])
                tail += chunk([], usage=usage_dict(total),
                              aft={"proposals": proposals, "rounds": rounds, "answers": answers})
        except AFTError as exc:
            if on_error is not None:
                on_error(exc)
            _, body = status_and_body(exc)
            logger.warning("request %s failed mid-stream: %s", request_id, exc.message)
            tail += _sse(body.model_dump())
        except Exception as exc:
            if on_error is not None:
                on_error(exc)
            logger.exception("request %s failed mid-stream", request_id)
            tail += _sse({"error": {"message": "internal server error", "type": "server_error",
                                    "param": None, "code": None}})
        yield tail + DONE
        finished = True
    finally:
        await events.aclose()  # a no-op when they ended; otherwise the backend aborts its requests now
        if on_close is not None:
            on_close(finished)
