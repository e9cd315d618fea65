"""A backend over OpenAI-compatible Chat Completions upstreams (typically `vllm serve`).

Both roles, which may go to different deployments, share one upstream client
(serving/backends/upstream_client.py: the pool, retries, timeouts and error rules).
n samples are ONE upstream call with `n`, so they share the prompt's KV cache.
Closing a stream or cancelling a call closes its upstream connection: vLLM aborts.
An upstream without a configured model name is asked for it (GET /models) at start and, while it
is down, again by each request and health check: the service starts before its upstream does.
max_tokens is a cap, as in the vllm backend: one that does not fit the upstream's context is dropped
(the upstream then generates what fits) rather than refused.
Tools travel upstream as `tools`/`tool_choice`/`parallel_tool_calls`; the upstream parses calls
(vLLM: `--enable-auto-tool-choice --tool-call-parser NAME` for "auto"; "required" and named choices need
no flag there) and they come back as `tool_calls` (a stream's call deltas go on as they arrive).
A JSON response format travels as `response_format`.
Prompts are counted (for the context budget) by a local tokenizer when one is configured, else by
vLLM's /tokenize endpoint; an upstream that offers neither counts nothing (prompt_size is None).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import aiohttp
import orjson
from yarl import URL

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
from serving.backends.openai_errors import raise_status, stream_error
from serving.backends.openai_target import Target, Upstream, context_of, headers_of, target_of
from serving.backends.openai_wire import call_pieces, dumps, request_body, tool_calls_of, usage_of
from serving.backends.tokenizer import LocalTokenizer
from serving.backends.upstream_client import (
    Method,
    Response,
    RetryKind,
    UpstreamClient,
    read_error_body,
    transport_error,
)
from serving.errors import BackendError, ContextLengthExceeded, UpstreamUnavailable
from serving.format import Message

_T = TypeVar("_T")
# What a server without vLLM's /tokenize answers there.
_NO_TOKENIZE = (404, 405, 501)

logger = logging.getLogger(__name__)


class OpenAIBackend:
    """The Backend protocol over one or two OpenAI-compatible upstreams.

    `timeout` bounds each wait for an upstream's bytes (a whole non-streamed answer; the gap between
    two chunks of a stream), `connect_timeout` connecting and health checks; `retries` bounds the
    back-off retries of each call (see UpstreamClient). `tokenizer` names a local tokenizer that
    counts prompts instead of the upstream's /tokenize."""

    def __init__(self, proposer: Upstream, aggregator: Upstream | None = None, *, timeout: float = 120.0,
                 connect_timeout: float = 5.0, max_connections: int = 1024, retries: int = 2,
                 tokenizer: str | None = None) -> None:
        self._upstreams: dict[Role, Upstream] = {"proposer": proposer, "aggregator": aggregator or proposer}
        self._client = UpstreamClient(timeout=timeout, connect_timeout=connect_timeout,
                                      max_connections=max_connections, retries=retries)
        self._tokenizer = LocalTokenizer(tokenizer) if tokenizer else None
        self._targets: dict[Role, Target] = {}
        self._discovery = asyncio.Lock()
        self._discovered: dict[tuple[str, str | None], Target] = {}
        self._contexts: dict[tuple[str, str], int | None] = {}
        self._cannot_count: set[str] = set()
        self._started = False

    @property
    def retried(self) -> Counter[RetryKind]:
        """Upstream calls sent again, by why (see UpstreamClient.retried)."""
        return self._client.retried

    async def start(self) -> None:
        """Open the connection pool, load the local tokenizer, and discover the model of each upstream
        that does not name one.

        An upstream that cannot be asked now does not stop the start: requests and health checks
        ask again (and fail with UpstreamUnavailable until it answers)."""
        if self._started:
            return
        if self._tokenizer is not None:
            await self._tokenizer.load()
        await self._client.start()
        self._started = True
        targets = {upstream: target_of(upstream) for upstream in set(self._upstreams.values())}
        self._targets = {role: targets[upstream] for role, upstream in self._upstreams.items()}
        for target in targets.values():
            if not target.model:
                try:
                    await self._discover(target)
                except UpstreamUnavailable as exc:
                    logger.warning("%s (%s); every request asks again until it answers", exc.message, exc.detail)

    async def close(self) -> None:
        """Close the pool; requests still in flight fail and their upstream connections close."""
        self._started = False
        self._targets = {}
        self._discovered = {}
        await self._client.close()

    async def _discover(self, target: Target) -> Target:
        """Ask `target` for its first model (and the context it declares); every role it serves gets it."""
        key = (str(target.models_url), target.where.secret)
        async with self._discovery:
            if key not in self._discovered:  # else found while this call waited
                try:
                    entry = orjson.loads(await self._read(target, "GET", target.models_url, quick=True))["data"][0]
                    model = str(entry["id"])
                except (BackendError, ValueError, LookupError, TypeError) as exc:
                    detail = ((exc.detail or exc.message) if isinstance(exc, BackendError)
                              else f"unexpected /models answer ({exc!r})")
                    raise UpstreamUnavailable(
                        "could not discover the upstream's model; configure the model name explicitly",
                        detail=f"upstream {target.where.label}: {detail}") from exc
                self._discovered[key] = replace(target, model=model, max_model_len=context_of(entry))
                self._targets = {role: self._discovered[key] if t is target else t
                                 for role, t in self._targets.items()}
        return self._discovered[key]

    async def _read(self, target: Target, method: Method, url: URL, body: bytes | None = None, *,
                    quick: bool = False) -> bytes:
        """One whole exchange's 200 body; anything else raises its domain error. `quick`: health
        checks and discovery (short timeout, no back-off retries)."""
        self._require_started()
        response = await self._client.open(method, url, headers_of(target), body, target.where,
                                           timeout=self._client.quick_timeout if quick else None, retry=not quick)
        return await self._read_body(target, response)

    async def _read_body(self, target: Target, response: Response) -> bytes:
        """The body of a 200 response; any other status raises its domain error. The response is released
        (its connection closed when the body was not read to its end, e.g. on cancellation)."""
        if response.status != 200:
            raise_status(target.where, response.status, response.reason, await read_error_body(response))
        try:
            return await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise transport_error(exc, target.where) from exc
        finally:
            response.release()

    def _require_started(self) -> None:
        if not self._started:
            raise RuntimeError("OpenAIBackend used before start() or after close()")

    async def _target(self, role: Role) -> Target:
        self._require_started()
        target = self._targets[role]
        return target if target.model else await self._discover(target)

    @staticmethod
    def _body(target: Target, messages: Sequence[Message], sampling: Sampling, n: int,
              stream: bool = False) -> bytes:
        # A max_tokens that the declared context cannot hold is left out: the upstream then generates what fits.
        return request_body(target.model, messages, sampling, n,
                            send_max_tokens=OpenAIBackend._capped(target, sampling), stream=stream)

    async def generate(self, role: Role, messages: Sequence[Message], sampling: Sampling,
                       n: int) -> Generation:
        """Sample `n` completions in ONE upstream request; usage is the upstream's (0 tokens if it omits it)."""
        target = await self._target(role)
        content = await self._withincontext_of(target, sampling, lambda s: self._read(
            target, "POST", target.chat_url, self._body(target, messages, s, n)))
        try:
            data = orjson.loads(content)
            choices = sorted(data["choices"], key=lambda choice: choice["index"])
            completions = [Completion(c["message"].get("content") or "", c.get("finish_reason"),
                                      tool_calls_of(c["message"].get("tool_calls"))) for c in choices]
        except (ValueError, LookupError, TypeError, AttributeError) as exc:
            raise UpstreamUnavailable("the upstream model server sent an unreadable completion",
                                      detail=f"upstream {target.where.label}: {exc!r}") from exc
        if len(completions) != n:
            raise UpstreamUnavailable(f"the upstream model server returned {len(completions)} choices for n={n}",
                                      detail=f"upstream {target.where.label} (does it support n?)")
        return Generation(completions, usage_of(data.get("usage")))

    async def stream(self, role: Role, messages: Sequence[Message],
                     sampling: Sampling) -> AsyncGenerator[StreamDelta, None]:
        """Yield each content delta (and the pieces of tool calls) as it arrives, then one empty delta with
        finish_reason and usage."""
        target = await self._target(role)
        response = await self._withincontext_of(target, sampling, lambda s: self._open_stream(
            target, self._body(target, messages, s, 1, stream=True)))
        finish_reason: str | None = None
        usage = Usage(requests=1)
        done = ended = False
        # Leaving this generator early (the consumer closed us, or was cancelled) closes the response,
        # and with it the connection: vLLM sees the disconnect and aborts the request.
        try:
            # SSE lines split once per network read (LF or CRLF; vLLM sends LF). The deltas of one read go on
            # as ONE delta: one token per read when the service keeps up, fewer, larger pieces when it falls
            # behind under load, so that every layer above does less work exactly when CPU is short (vLLM's
            # own engine merges outputs for a lagging consumer the same way).
            # Read to the end even after [DONE], so the connection goes back to the pool.
            rest = b""
            async for data in response.content.iter_any():
                lines = (rest + data if rest else data).split(b"\n")
                rest = lines.pop()
                pieces: list[str] = []
                calls: list[ToolCallDelta] = []
                for line in lines:
                    if done or not line.startswith(b"data:"):
                        continue  # blank separators, comments (keep-alives), other SSE fields
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        done = True
                        continue
                    chunk = orjson.loads(payload)
                    if "error" in chunk:
                        if pieces or calls:
                            yield StreamDelta("".join(pieces), tool_calls=tuple(calls))
                        raise stream_error(target.where, chunk, payload)
                    choices = chunk.get("choices")
                    if choices:
                        choice = choices[0]
                        delta = choice.get("delta")
                        text = delta.get("content") if delta else None
                        if text:
                            pieces.append(text)
                        if delta and delta.get("tool_calls"):
                            calls.extend(call_pieces(delta["tool_calls"]))
                        if choice.get("finish_reason"):
                            finish_reason = choice["finish_reason"]
                    if chunk.get("usage"):
                        usage = usage_of(chunk["usage"])
                if calls:
                    yield StreamDelta("".join(pieces), tool_calls=tuple(calls))
                elif pieces:
                    yield StreamDelta(pieces[0] if len(pieces) == 1 else "".join(pieces))
            ended = True
            if rest.startswith(b"data:") and rest[5:].strip() == b"[DONE]":
                done = True  # the last line came without its line end
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise transport_error(exc, target.where) from exc
        except (ValueError, LookupError, TypeError, AttributeError) as exc:
            raise UpstreamUnavailable("the upstream model server sent an unreadable stream",
                                      detail=f"upstream {target.where.label}: {exc!r}") from exc
        finally:
            if ended:
                response.release()
            else:
                response.close()
        if not done and finish_reason is None:
            raise UpstreamUnavailable("the upstream model server ended the stream before it finished",
                                      detail=f"upstream {target.where.label}")
        yield StreamDelta("", finish_reason=finish_reason, usage=usage)

    async def _withincontext_of(self, target: Target, sampling: Sampling,
                              call: Callable[[Sampling], Awaitable[_T]]) -> _T:
        """`call(sampling)`; when the prompt fits but prompt + max_tokens does not, `call` again without
        max_tokens, so the upstream generates what fits (a cap, not a demand)."""
        try:
            return await call(sampling)
        except ContextLengthExceeded:
            if not self._capped(target, sampling):
                raise
            return await call(replace(sampling, max_tokens=None))

    async def _open_stream(self, target: Target, body: bytes) -> Response:
        """The 200 response of a streamed request, body unread."""
        self._require_started()
        response = await self._client.open("POST", target.chat_url, headers_of(target), body, target.where)
        if response.status != 200:
            raise_status(target.where, response.status, response.reason, await read_error_body(response))
        return response

    @staticmethod
    def _capped(target: Target, sampling: Sampling) -> bool:
        """Whether requests with `sampling` send max_tokens (see _body)."""
        return sampling.max_tokens is not None and (target.max_model_len is None
                                                    or sampling.max_tokens < target.max_model_len)

    async def prompt_size(self, role: Role, messages: Sequence[Message],
                          tools: Tools | None = None) -> PromptSize | None:
        """The prompt's tokens (the generation prompt included) and the context of `role`'s model:
        counted by the local tokenizer when one is configured, else by vLLM's /tokenize. None when
        the upstream cannot count (no /tokenize) or, with a local tokenizer, declares no context."""
        target = await self._target(role)
        if self._tokenizer is not None:
            context = await self._context_length(target)
            if context is None:
                self._cannot_count_once(target, "its /models entry declares no max_model_len")
                return None
            return PromptSize(await self._tokenizer.count(messages, tools), context)
        if str(target.tokenize_url) in self._cannot_count:
            return None
        request: dict[str, Any] = {"model": target.model, "messages": list(messages), "add_generation_prompt": True}
        if tools is not None:
            request["tools"] = list(tools.definitions)
        body = dumps(request)
        response = await self._client.open("POST", target.tokenize_url, headers_of(target), body, target.where)
        if response.status in _NO_TOKENIZE:
            await read_error_body(response)
            self._cannot_count_once(target, f"{target.tokenize_url} answered {response.status}; "
                                            "name a local tokenizer (--tokenizer) to count tokens")
            return None
        try:
            data = orjson.loads(await self._read_body(target, response))
            return PromptSize(int(data["count"]), int(data["max_model_len"]))
        except (ValueError, LookupError, TypeError) as exc:
            self._cannot_count_once(target, f"unexpected /tokenize answer ({exc!r})")
            return None

    async def model_context(self) -> int | None:
        """What the aggregator's upstream declares in /models (asked once), None when it declares none
        or cannot be asked now."""
        target = self._targets.get("aggregator")
        if target is None:
            return None
        try:
            return await self._context_length(target)
        except BackendError:
            return None

    async def _context_length(self, target: Target) -> int | None:
        """The context `target`'s model declares in /models (asked once; None if it declares none)."""
        if target.max_model_len is not None:
            return target.max_model_len
        key = (str(target.models_url), target.model)
        if key not in self._contexts:
            try:
                entries = orjson.loads(await self._read(target, "GET", target.models_url, quick=True))["data"]
                self._contexts[key] = next((context_of(e) for e in entries if e.get("id") == target.model), None)
            except (ValueError, LookupError, TypeError, AttributeError):
                self._contexts[key] = None
        return self._contexts[key]

    def _cannot_count_once(self, target: Target, why: str) -> None:
        if str(target.tokenize_url) not in self._cannot_count:
            self._cannot_count.add(str(target.tokenize_url))
            logger.warning("cannot count prompt tokens for upstream %s: %s; no context budget for it",
                           target.where.label, why)

    async def check_sampling(self, sampling: Sampling) -> None:
        """Nothing to check here: the request's schemas were checked as JSON schemas (app/), and the
        upstream compiles them and answers 400 when it cannot, before it generates."""

    async def check_health(self) -> None:
        """GET /models on each distinct upstream; raise UpstreamUnavailable if one does not answer 200."""
        if not self._started:
            raise UpstreamUnavailable("the openai backend is not started")
        distinct = {(str(t.models_url), t.where.secret): t for t in self._targets.values()}
        for target in distinct.values():
            try:
                await (self._read(target, "GET", target.models_url, quick=True) if target.model
                       else self._discover(target))
            except BackendError as exc:
                raise UpstreamUnavailable(exc.message, detail=exc.detail) from exc
