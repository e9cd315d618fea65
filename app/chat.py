"""Chat completions: check, admit, run the pipeline, shape the answer. No HTTP here beyond the
stream's response object: `complete` returns a ChatCompletion, `stream` a StreamedAnswer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from app.access_log import current
from app.answer_stream import Renderer, StreamedAnswer
from app.errors import ModelNotFound, status_and_body
from app.lifecycle import Lifecycle
from app.metrics import Metrics
from app.params import conversation, pipeline_params, subset_read
from app.protocol import (
    AftAnswer,
    AftInfo,
    AftLayer,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    FunctionCall,
    ResponseMessage,
    RoundUsage,
    ToolCall,
    UsageInfo,
)
from app.reasoning import reasoning_text
from app.settings import Settings
from app.streaming import ChunkRenderer
from serving.errors import AFTError, InvalidRequest
from serving.pipeline import Answer, Pipeline, PipelineParams

# A model name is echoed in an error up to this many characters.
_SHOWN_NAME = 200


def shown(name: str) -> str:
    """`name` as an error message may quote it: a client's string, cut to a sane length."""
    return name if len(name) <= _SHOWN_NAME else name[:_SHOWN_NAME] + f"... ({len(name)} characters)"


class ChatService:
    """Serves chat completion requests through the propose-and-aggregate pipeline."""

    def __init__(self, settings: Settings, pipeline: Pipeline, metrics: Metrics, lifecycle: Lifecycle) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.metrics = metrics
        self.lifecycle = lifecycle
        self.model_names = {settings.model_id} | ({settings.model} if settings.model else set())

    def _check(self, request: ChatCompletionRequest) -> PipelineParams:
        if request.model not in self.model_names:
            raise ModelNotFound(f"The model '{shown(request.model)}' does not exist; this server serves "
                                f"'{self.settings.model_id}'", param="model", code="model_not_found")
        refused = request.unsupported()
        if refused:
            raise InvalidRequest(refused[1], param=refused[0], code="unsupported_parameter")
        if request.messages[-1].role == "assistant":
            raise InvalidRequest("the last message must not be from the assistant: continuing a "
                                 "partial answer is not supported", param="messages")
        return pipeline_params(request, self.settings)

    def _reasoning(self, request: ChatCompletionRequest) -> bool:
        """Whether the drafts go out as the answer's reasoning."""
        asked = request.aft.reasoning if request.aft else None
        return self.settings.reasoning_default if asked is None else asked

    async def complete(self, request: ChatCompletionRequest) -> ChatCompletion:
        """Answer a non-streaming request."""
        params = self._check(request)
        access = current()
        access.chat(stream=False, proposals=params.proposals, rounds=params.rounds, n=request.n)
        self.lifecycle.admit()
        start = time.perf_counter()
        status = "500"
        try:
            async with self.lifecycle.deadline():
                answers = await self.pipeline.run(conversation(request), params, n=request.n)
            status = "200"
        except asyncio.CancelledError:
            status = "disconnected"
            raise
        except AFTError as exc:
            status = str(status_and_body(exc)[0])
            raise
        finally:
            self.lifecycle.release()
            self.metrics.answered("false", status, time.perf_counter() - start)
            access.outcome = status
        for answer in answers:
            self.metrics.record_answer(answer.usage_by_round, answer.seconds_by_round, params.rounds,
                                       answer.early_exit_round)
            self.metrics.record_budget(answer.drafts_capped_to, answer.drafts_trimmed)
            access.add_answer(answer.usage_by_round, answer.seconds_by_round)
        return _completion(f"chatcmpl-{access.request_id}", request, params, answers,
                           reasoning=self._reasoning(request))

    async def stream(self, request: ChatCompletionRequest,
                     render: Callable[[PipelineParams], Renderer] | None = None) -> StreamedAnswer:
        """Check, plan the drafts' context budget and admit now (so refusals are plain HTTP errors);
        the answer owns the slot from here. `render` makes the stream's wire format for the request's
        resolved parameters (another API's); by default, chat.completion.chunk."""
        params = self._check(request)
        access = current()
        access.chat(stream=True, proposals=params.proposals, rounds=params.rounds, n=request.n)
        messages = conversation(request)
        budget = await self.pipeline.plan(messages, params)
        options = request.stream_options
        summary = (params.proposals, params.rounds, subset_read(params))
        renderer = render(params) if render else ChunkRenderer(
            f"chatcmpl-{access.request_id}", request.model, int(time.time()), request.n,
            summary if options and options.include_usage else None)
        events = self.pipeline.stream(messages, params, n=request.n, budget=budget,
                                      live_drafts=self._reasoning(request))
        self.lifecycle.admit()
        return StreamedAnswer(
            events, renderer, lifecycle=self.lifecycle, metrics=self.metrics, rounds=params.rounds,
            include_proposals=bool(request.aft and request.aft.include_proposals),
            keepalive=self.settings.stream_keepalive)


def _message(answer: Answer, reasoning: bool) -> ResponseMessage:
    text = reasoning_text(answer.layers) if reasoning else None
    if not answer.tool_calls:
        return ResponseMessage(content=answer.text, reasoning=text, reasoning_content=text)
    # OpenAI's shape for a turn that calls tools: content null unless the model also wrote text.
    return ResponseMessage(content=answer.text or None, reasoning=text, reasoning_content=text, tool_calls=[
        ToolCall(id=call.id, function=FunctionCall(name=call.name, arguments=call.arguments))
        for call in answer.tool_calls])


def _completion(completion_id: str, request: ChatCompletionRequest, params: PipelineParams,
                answers: list[Answer], *, reasoning: bool) -> ChatCompletion:
    usage = UsageInfo()
    info = AftInfo(proposals=params.proposals, rounds=params.rounds, subset=subset_read(params), answers=[])
    include = bool(request.aft and request.aft.include_proposals)
    for answer in answers:
        usage.prompt_tokens += answer.usage.prompt_tokens
        usage.completion_tokens += answer.usage.completion_tokens
        info.answers.append(AftAnswer(
            index=answer.index,
            usage_by_round=[RoundUsage(round=i, requests=u.requests, prompt_tokens=u.prompt_tokens,
                                       completion_tokens=u.completion_tokens, total_tokens=u.total_tokens)
                            for i, u in enumerate(answer.usage_by_round)],
            layers=[AftLayer(round=layer.round, outputs=layer.outputs) for layer in answer.layers]
            if include else None,
            drafts_capped_to=answer.drafts_capped_to, drafts_trimmed=answer.drafts_trimmed,
            early_exit_round=answer.early_exit_round))
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
    return ChatCompletion(
        id=completion_id, model=request.model, usage=usage, aft=info,
        choices=[Choice(index=a.index, message=_message(a, reasoning), finish_reason=a.finish_reason)
                 for a in answers])
