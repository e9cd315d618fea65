"""Chat completions: validate, run the pipeline, shape the answer. No FastAPI responses here:
`complete` returns a ChatCompletion, `stream` an async iterator of SSE lines."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from collections.abc import AsyncIterator

from app.errors import ModelNotFound, status_and_body
from app.metrics import CHAT_PATH, Metrics
from app.params import conversation, pipeline_params
from app.protocol import (
    AftAnswer,
    AftInfo,
    AftLayer,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    ResponseMessage,
    RoundUsage,
    UsageInfo,
)
from app.settings import Settings
from app.streaming import sse_stream
from serving.errors import AFTError, InvalidRequest, Overloaded
from serving.pipeline import AnswerDone, Pipeline, PipelineParams

logger = logging.getLogger(__name__)


class Admission:
    """Bounds the chat requests served at once; past the bound a request is refused, never queued
    without limit (a queue that grows under overload only turns 503s into timeouts)."""

    def __init__(self, limit: int, metrics: Metrics) -> None:
        self.limit = limit
        self.active = 0
        self.metrics = metrics

    def acquire(self) -> None:
        if self.active >= self.limit:
            raise Overloaded(f"the server is serving its limit of {self.limit} requests; retry shortly",
                             code="overloaded")
        self.active += 1
        self.metrics.in_flight.inc()

    def release(self) -> None:
        self.active -= 1
        self.metrics.in_flight.dec()


class ChatService:
    """Serves chat completion requests through the propose-and-aggregate pipeline."""

    def __init__(self, settings: Settings, pipeline: Pipeline, metrics: Metrics) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.metrics = metrics
        self.admission = Admission(settings.max_concurrent_requests, metrics)
        self.model_names = {settings.model_id} | ({settings.model} if settings.model else set())

    def _check(self, request: ChatCompletionRequest) -> None:
        if request.model not in self.model_names:
            raise ModelNotFound(f"The model '{request.model}' does not exist; this server serves "
                                f"'{self.settings.model_id}'", param="model", code="model_not_found")
        refused = request.unsupported()
        if refused:
            raise InvalidRequest(refused[1], param=refused[0], code="unsupported_parameter")
        if request.messages[-1].role == "assistant":
            raise InvalidRequest("the last message must not be from the assistant: continuing a "
                                 "partial answer is not supported", param="messages")

    def _admit(self, request: ChatCompletionRequest) -> PipelineParams:
        """Check the request and take an admission slot; a refusal is counted here."""
        try:
            self._check(request)
            params = pipeline_params(request, self.settings)
            self.admission.acquire()
        except AFTError as exc:
            self.metrics.refused(CHAT_PATH, status_and_body(exc)[0], "true" if request.stream else "false")
            raise
        return params

    async def complete(self, request: ChatCompletionRequest) -> ChatCompletion:
        """Answer a non-streaming request."""
        start = time.perf_counter()
        params = self._admit(request)
        status = "500"
        try:
            answers = await self.pipeline.run(conversation(request), params, n=request.n)
            status = "200"
        except asyncio.CancelledError:
            status = "disconnected"
            raise
        except AFTError as exc:
            status = str(status_and_body(exc)[0])
            raise
        finally:
            self.admission.release()
            self.metrics.answered("false", status, time.perf_counter() - start)
        usage = UsageInfo()
        info = AftInfo(proposals=params.proposals, rounds=params.rounds, answers=[])
        include = bool(request.aft and request.aft.include_proposals)
        for answer in answers:
            self.metrics.record_usage(answer.usage_by_round, params.rounds)
            usage.prompt_tokens += answer.usage.prompt_tokens
            usage.completion_tokens += answer.usage.completion_tokens
            info.answers.append(AftAnswer(
                index=answer.index,
                usage_by_round=[RoundUsage(round=i, requests=u.requests, prompt_tokens=u.prompt_tokens,
                                           completion_tokens=u.completion_tokens, total_tokens=u.total_tokens)
                                for i, u in enumerate(answer.usage_by_round)],
                layers=[AftLayer(round=layer.round, outputs=layer.outputs) for layer in answer.layers]
                if include else None))
        usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
        return ChatCompletion(
            id=f"chatcmpl-{uuid.uuid4().hex}", model=request.model, usage=usage, aft=info,
            choices=[Choice(index=a.index, message=ResponseMessage(content=a.text), finish_reason=a.finish_reason)
                     for a in answers])

    def stream(self, request: ChatCompletionRequest) -> AsyncIterator[str]:
        """Validate and admit now (so refusals are plain HTTP errors); return the SSE stream."""
        params = self._admit(request)
        start = time.perf_counter()
        metrics = self.metrics
        status, open_ = "disconnected", True

        def failed(exc: Exception) -> None:
            nonlocal status
            status = str(status_and_body(exc)[0]) if isinstance(exc, AFTError) else "500"

        def first_token() -> None:
            metrics.ttft.observe(time.perf_counter() - start)

        def answered(done: AnswerDone) -> None:
            metrics.record_usage(done.usage_by_round, params.rounds)

        def closed(finished: bool) -> None:
            nonlocal status, open_
            if not open_:
                return
            open_ = False
            if finished and status == "disconnected":
                status = "200"
            self.admission.release()
            metrics.answered("true", status, time.perf_counter() - start)

        options = request.stream_options
        # The stream is the generator itself (no wrapper re-yielding each token); it releases the
        # admission when it ends, and the finalizer does when it is dropped before it ever started
        # (a client gone before the response began: a generator never started runs no finally).
        lines = sse_stream(
            self.pipeline.stream(conversation(request), params, n=request.n),
            request_id=f"chatcmpl-{uuid.uuid4().hex}", model=request.model, created=int(time.time()),
            n=request.n, proposals=params.proposals, rounds=params.rounds,
            include_usage=bool(options and options.include_usage),
            include_proposals=bool(request.aft and request.aft.include_proposals),
            on_first_token=first_token, on_answer=answered, on_error=failed, on_close=closed)
        weakref.finalize(lines, closed, False).atexit = False
        return lines
