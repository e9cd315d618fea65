"""A streamed answer as one object: it holds the request's admission slot from the moment it is
admitted, renders the pipeline's events with its API's Renderer (chat.completion.chunk SSE, or the
Responses API's events), ends the stream the API's way whatever happens (an error, the request's
deadline, shutdown: one error event), and in one `finally` gives the slot back, closes the pipeline
(so the backend aborts what it still runs) and records the outcome.

EventStream (app/sse.py) does the HTTP side: a `: keep-alive` comment after a few silent seconds
(proxies cut connections that stay silent while drafts are written), and a client's disconnect
cancels the stream at once, so the pipeline stops spending engine time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator
from typing import Any, Protocol

from starlette.types import Receive, Scope, Send

from app.access_log import current
from app.errors import status_and_body
from app.lifecycle import Lifecycle
from app.metrics import Metrics, error_kind
from app.protocol import ErrorInfo, ErrorResponse
from app.sse import EventStream
from serving.errors import AFTError
from serving.live_draft import DraftDelta
from serving.pipeline import AnswerDelta, AnswerDone, Event, Layer, LayerDone

logger = logging.getLogger(__name__)

_INTERNAL_ERROR = ErrorResponse(error=ErrorInfo(message="internal server error", type="server_error"))


class Renderer(Protocol):
    """One API's wire format for a stream's events (app/streaming.py: chat; app/responses/events.py)."""

    request_id: str
    n: int
    """Answers in the stream."""

    @property
    def answers(self) -> list[Any]:
        """The answers that ended (one entry each)."""

    def opening(self) -> str: ...
    def token(self, index: int, text: str) -> str: ...
    def answer_delta(self, event: AnswerDelta) -> str:
        """A piece of the answer that carries pieces of tool calls."""
    def reasoning(self, event: DraftDelta) -> str: ...
    def answer_done(self, event: AnswerDone) -> str: ...
    def layer(self, index: int, layer: Layer) -> str: ...
    def closing(self) -> str:
        """What ends a stream whose answers all ended."""
    def failed(self, body: ErrorResponse) -> str:
        """What ends a stream that failed: the error."""


class StreamedAnswer(EventStream):
    """Create it once the request is admitted; from then on it owns the slot."""

    def __init__(self, events: AsyncGenerator[Event, None], renderer: Renderer, *, lifecycle: Lifecycle,
                 metrics: Metrics, rounds: int, include_proposals: bool, keepalive: float) -> None:
        super().__init__(self._pieces(), keepalive)
        self.events = events
        self.renderer = renderer
        self.lifecycle = lifecycle
        self.metrics = metrics
        self.rounds, self.include_proposals = rounds, include_proposals
        self.status = "disconnected"  # until the stream says otherwise
        self.start = time.perf_counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.events.aclose()  # a no-op when they ended; otherwise the backend aborts its requests now
            self.lifecycle.release()
            self.metrics.answered("true", self.status, time.perf_counter() - self.start)
            current().outcome = self.status

    async def _pieces(self) -> AsyncGenerator[bytes, None]:
        renderer = self.renderer
        # The last answer's finish and the stream's end (chat: the usage chunk and [DONE]) leave as one piece.
        tail = ""
        try:
            async with self.lifecycle.deadline():
                yield renderer.opening().encode()
                first_token = True
                async for event in self.events:
                    if isinstance(event, AnswerDelta):
                        if first_token:
                            self.metrics.ttft.observe(time.perf_counter() - self.start)
                            first_token = False
                        if event.tool_calls:
                            yield renderer.answer_delta(event).encode()
                        else:
                            yield renderer.token(event.index, event.text).encode()
                    elif isinstance(event, DraftDelta):
                        yield renderer.reasoning(event).encode()
                    elif isinstance(event, AnswerDone):
                        self.metrics.record_answer(event.usage_by_round, event.seconds_by_round, self.rounds,
                                                   event.early_exit_round)
                        current().add_answer(event.usage_by_round, event.seconds_by_round)
                        self.metrics.record_budget(event.drafts_capped_to, event.drafts_trimmed)
                        finish = renderer.answer_done(event)
                        if len(renderer.answers) < renderer.n:  # other answers still run: news now
                            yield finish.encode()
                        else:
                            tail = finish
                    elif isinstance(event, LayerDone) and self.include_proposals:
                        piece = renderer.layer(event.index, event.layer)
                        if piece:
                            yield piece.encode()
            tail += renderer.closing()
            self.status = "200"
        except AFTError as exc:
            status, body = status_and_body(exc)
            self.status = str(status)
            logger.warning("request %s failed mid-stream: %s%s", renderer.request_id, exc.message,
                           f" ({exc.detail})" if exc.detail else "")
            self.lifecycle.observe(exc)
            self.metrics.record_error(exc)
            current().error = error_kind(exc)
            tail += renderer.failed(body)
        except Exception:
            self.status = "500"
            logger.exception("request %s failed mid-stream", renderer.request_id)
            tail += renderer.failed(_INTERNAL_ERROR)
        yield tail.encode()
