"""A backend over OpenAI-compatible Chat Completions upstreams (typically `vllm serve`).

One connection pool per kind of upstream serves both roles, which may go to different
deployments: plain-HTTP upstreams share a lean HTTP/1.1 client (serving/backends/http1.py),
https or proxied ones an httpx transport, to which httpx.Request objects go straight
(injectable: tests pass httpx.MockTransport). n samples are ONE upstream call
with `n`, so they share the prompt's KV cache.
Closing a stream or cancelling a call closes its upstream connection: vLLM aborts.
`timeout` bounds each wait on the upstream (a whole non-streamed call; the gap
between two chunks of a stream); `connect_timeout` bounds connecting and health checks.
An upstream without a configured model name is asked for it (GET /models) at start and, while it
is down, again by each request and health check: the service starts before its upstream does.
max_tokens is a cap, as in the vllm backend: one that does not fit the upstream's context is dropped
(the upstream then generates what fits) rather than refused.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, NoReturn

import httpx
import orjson

from serving.backends.base import Completion, Generation, PromptSize, Role, Sampling, StreamDelta, Usage
from serving.backends.http1 import HTTP1Response, HTTP1Transport
from serving.errors import (
    BackendError,
    ContextLengthExceeded,
    InvalidRequest,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from serving.format import Message

_STREAM_OPTIONS = {"include_usage": True}
_CONTEXT_MARKERS = ("context length", "maximum model length", "max_model_len")
# vLLM's server (uvicorn) drops idle connections after 5 s; reusing one it is closing would fail a request.
_KEEPALIVE_EXPIRY = 4.0
_MAX_ERROR_TEXT = 500

# What both kinds of transport answer with; the backend uses only what the two have in common
# (status_code, reason_phrase, aread, content, json, text, aiter_bytes, aclose).
UpstreamResponse = HTTP1Response | httpx.Response
Transport = HTTP1Transport | httpx.AsyncBaseTransport

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upstream:
    """An OpenAI-compatible deployment: base URL as an OpenAI client takes it (http://host:8000/v1)."""

    base_url: str
    model: str | None = None
    """Model name to request; None: the first model the upstream lists, found at start()."""
    api_key: str | None = None


@dataclass(frozen=True)
class _Target:
    """An upstream resolved at start(): everything a request needs, computed once."""

    label: str  # base URL without credentials, for messages
    chat_url: httpx.URL
    models_url: httpx.URL
    model: str  # "" until discovered
    headers: list[tuple[bytes, bytes]]
    api_key: str | None
    transport: Transport
    max_model_len: int | None = None
    """The context the upstream declares in its /models entry (vLLM does), when it was asked."""


def _dumps(body: dict[str, Any]) -> bytes:
    # What httpx's json= sends (compact, UTF-8), without going through its client.
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _error_fields(body: Any) -> tuple[str | None, str | None]:
    """Message and param of an error body: OpenAI's {"error": {...}} or vLLM's older {"message": ...}."""
    error = (body.get("error") or body) if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        param = error.get("param")
        return error["message"], param if isinstance(param, str) else None
    return (error, None) if isinstance(error, str) else (None, None)


def _redact(text: str, target: _Target) -> str:
    return text.replace(target.api_key, "***") if target.api_key else text


def _raise_status(target: _Target, response: UpstreamResponse) -> NoReturn:
    """Map an upstream error response to the domain error that says whose fault it is."""
    status = response.status_code
    try:
        message, param = _error_fields(response.json())
    except ValueError:
        message, param = None, None
    message = _redact(message or response.text[:_MAX_ERROR_TEXT] or response.reason_phrase, target)
    if status in (400, 422):
        # The client's request was refused; pass the upstream's words on as they are (no internal URL).
        if any(marker in message.lower() for marker in _CONTEXT_MARKERS):
            raise ContextLengthExceeded(message, param="max_tokens" if param == "max_tokens" else "messages")
        raise InvalidRequest(message, param=param.removeprefix("body.") if param else None)
    where = f"upstream {target.label} answered {status}: {message}"
    if status == 429:
        raise UpstreamRateLimited(where)
    if status in (401, 403, 404):
        raise UpstreamUnavailable(
            f"{where} (the service's upstream URL, model or API key is misconfigured; not the client's fault)")
    raise UpstreamUnavailable(where)


def _transport_error(target: _Target, exc: httpx.TransportError) -> BackendError:
    detail = _redact(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, target)
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"upstream {target.label} timed out ({detail})")
    return UpstreamUnavailable(f"upstream {target.label} could not be reached ({detail})")


def _usage(data: Any) -> Usage:
    # An upstream that reports no usage still cost one request; its token counts are unknown, so 0.
    counts = data if isinstance(data, dict) else {}
    return Usage(counts.get("prompt_tokens") or 0, counts.get("completion_tokens") or 0, requests=1)


async def _read_and_close(response: UpstreamResponse) -> None:
    try:
        await response.aread()
    finally:
        await response.aclose()


def _env_proxy(url: httpx.URL) -> str | None:
    """The proxy the environment (HTTP_PROXY, NO_PROXY, ...) names for `url`, as httpx would use it."""
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    return proxy if proxy and not urllib.request.proxy_bypass(url.host) else None


class OpenAIBackend:
    """The Backend protocol over one or two OpenAI-compatible upstreams."""

    def __init__(self, proposer: Upstream, aggregator: Upstream | None = None, *, timeout: float = 600.0,
                 connect_timeout: float = 10.0, max_connections: int = 1024,
                 transport: Transport | None = None) -> None:
        self._upstreams: dict[Role, Upstream] = {"proposer": proposer, "aggregator": aggregator or proposer}
        # httpx's per-request timeout extension: what AsyncClient(timeout=Timeout(timeout, connect=...)) sends.
        self._timeouts = {"connect": connect_timeout, "read": timeout, "write": timeout, "pool": timeout}
        self._health_timeouts = dict.fromkeys(("connect", "read", "write", "pool"), connect_timeout)
        self._max_connections = max_connections
        self._injected = transport
        self._transports: dict[str, Transport] = {}
        self._targets: dict[Role, _Target] = {}
        self._discovery = asyncio.Lock()
        self._discovered: dict[tuple[str, str | None], _Target] = {}
        self._started = False

    async def start(self) -> None:
        """Open the connection pools and discover the model of each upstream that does not name one.

        An upstream that cannot be asked now does not stop the start: requests and health checks
        ask again (and fail with UpstreamUnavailable until it answers)."""
        if self._started:
            return
        self._started = True
        targets = {upstream: self._target_of(upstream) for upstream in set(self._upstreams.values())}
        self._targets = {role: targets[upstream] for role, upstream in self._upstreams.items()}
        for target in targets.values():
            if not target.model:
                try:
                    await self._discover(target)
                except UpstreamUnavailable as exc:
                    logger.warning("%s; every request asks again until it answers", exc.message)

    async def close(self) -> None:
        """Close the pools; requests still in flight fail and their upstream connections close."""
        transports = [*self._transports.values(), *([self._injected] if self._injected is not None else [])]
        self._started = False
        self._targets = {}
        self._discovered = {}
        self._transports = {}
        for transport in transports:
            await transport.aclose()

    def _transport_for(self, url: httpx.URL) -> Transport:
        """Plain-HTTP upstreams (the usual vLLM deployment) get the lean HTTP/1.1 client; https and
        proxied ones httpx's own transport. Requests go straight to the transport: httpx's client layer
        (URL and header merging, cookies, auth and redirect hooks) cost as much CPU as the transport
        itself and does nothing for a fixed upstream (bench/README.md)."""
        if self._injected is not None:
            return self._injected
        proxy = _env_proxy(url)
        key = f"{url.scheme} via {proxy}" if proxy else url.scheme
        if key not in self._transports:
            if key == "http":
                self._transports[key] = HTTP1Transport(max_connections=self._max_connections,
                                                       keepalive_expiry=_KEEPALIVE_EXPIRY)
            else:
                limits = httpx.Limits(max_connections=self._max_connections,
                                      max_keepalive_connections=self._max_connections,
                                      keepalive_expiry=_KEEPALIVE_EXPIRY)
                self._transports[key] = httpx.AsyncHTTPTransport(limits=limits, proxy=proxy)
        return self._transports[key]

    def _target_of(self, upstream: Upstream) -> _Target:
        base = upstream.base_url.rstrip("/")
        url = httpx.URL(base)  # credentials in the URL stay out of messages
        label = str(url.copy_with(username=None, password=None)) if url.userinfo else base
        headers = [(b"content-type", b"application/json")]
        if upstream.api_key:
            headers.append((b"authorization", f"Bearer {upstream.api_key}".encode()))
        return _Target(label, httpx.URL(base + "/chat/completions"), httpx.URL(base + "/models"),
                       upstream.model or "", headers, upstream.api_key, self._transport_for(url))

    async def _discover(self, target: _Target) -> _Target:
        """Ask `target` for its first model (and the context it declares); every role it serves gets it."""
        key = (str(target.models_url), target.api_key)
        async with self._discovery:
            if key not in self._discovered:  # else found while this call waited
                try:
                    entry = (await self._get_models(target))["data"][0]
                    model = entry["id"]
                except (BackendError, ValueError, LookupError, TypeError) as exc:
                    detail = exc.message if isinstance(exc, BackendError) else f"unexpected /models answer ({exc!r})"
                    raise UpstreamUnavailable(f"could not discover the model served at {target.label}: {detail}; "
                                              "configure the model name explicitly") from exc
                context = entry.get("max_model_len")
                if not (isinstance(context, int) and context > 0):
                    context = None
                self._discovered[key] = replace(target, model=str(model), max_model_len=context)
                self._targets = {role: self._discovered[key] if t is target else t
                                 for role, t in self._targets.items()}
            return self._discovered[key]

    async def _send(self, target: _Target, url: httpx.URL, body: bytes | None = None,
                    timeouts: dict[str, float] | None = None) -> UpstreamResponse:
        """POST `body` (GET without one); the response's body is not read yet: close it."""
        method = "POST" if body is not None else "GET"
        timeouts = timeouts or self._timeouts
        if isinstance(target.transport, HTTP1Transport):
            return await target.transport.send(method, url, target.headers, body, timeouts)
        request = httpx.Request(method, url, headers=target.headers, content=body, extensions={"timeout": timeouts})
        response = await target.transport.handle_async_request(request)
        response.request = request
        return response

    async def _read(self, target: _Target, url: httpx.URL, body: bytes | None = None,
                    timeouts: dict[str, float] | None = None) -> UpstreamResponse:
        """One whole exchange; transport errors become domain errors, error statuses too."""
        self._require_started()
        try:
            response = await self._send(target, url, body, timeouts)
            await _read_and_close(response)
        except httpx.TransportError as exc:
            raise _transport_error(target, exc) from exc
        if response.status_code != 200:
            _raise_status(target, response)
        return response

    async def _get_models(self, target: _Target) -> Any:
        return (await self._read(target, target.models_url, timeouts=self._health_timeouts)).json()

    def _require_started(self) -> None:
        if not self._started:
            raise RuntimeError("OpenAIBackend used before start() or after close()")

    async def _target(self, role: Role) -> _Target:
        self._require_started()
        target = self._targets[role]
        return target if target.model else await self._discover(target)

    @staticmethod
    def _body(target: _Target, messages: Sequence[Message], sampling: Sampling, n: int,
              stream: bool = False) -> bytes:
        body: dict[str, Any] = {"model": target.model,
                                "messages": messages if isinstance(messages, list) else list(messages),
                                "n": n, "temperature": sampling.temperature, "top_p": sampling.top_p}
        if OpenAIBackend._capped(target, sampling):
            # One that the declared context cannot hold is left out: the upstream then generates what fits.
            body["max_tokens"] = sampling.max_tokens
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.presence_penalty:
            body["presence_penalty"] = sampling.presence_penalty
        if sampling.frequency_penalty:
            body["frequency_penalty"] = sampling.frequency_penalty
        if stream:
            body["stream"] = True
            body["stream_options"] = _STREAM_OPTIONS
        return _dumps(body)

    async def generate(self, role: Role, messages: Sequence[Message], sampling: Sampling,
                       n: int) -> Generation:
        """Sample `n` completions in ONE upstream request; usage is the upstream's (0 tokens if it omits it)."""
        target = await self._target(role)
        response = await self._within_context(target, sampling, lambda s: self._read(
            target, target.chat_url, self._body(target, messages, s, n)))
        try:
            data = orjson.loads(response.content)
            choices = sorted(data["choices"], key=lambda choice: choice["index"])
            completions = [Completion(c["message"].get("content") or "", c.get("finish_reason")) for c in choices]
        except (ValueError, LookupError, TypeError, AttributeError) as exc:
            raise UpstreamUnavailable(f"upstream {target.label} sent an unreadable completion ({exc!r})") from exc
        if len(completions) != n:
            raise UpstreamUnavailable(f"upstream {target.label} returned {len(completions)} choices for n={n} "
                                      "(does it support n?)")
        return Generation(completions, _usage(data.get("usage")))

    async def stream(self, role: Role, messages: Sequence[Message],
                     sampling: Sampling) -> AsyncGenerator[StreamDelta, None]:
        """Yield each content delta as it arrives, then one empty delta with finish_reason and usage."""
        target = await self._target(role)
        response = await self._within_context(target, sampling, lambda s: self._post_stream(
            target, self._body(target, messages, s, 1, stream=True)))
        finish_reason: str | None = None
        usage = Usage(requests=1)
        done = False
        # Leaving this generator early (the consumer closed us, or was cancelled) closes the response,
        # and with it the connection: vLLM sees the disconnect and aborts the request.
        try:
            # SSE lines by hand (LF or CRLF; vLLM sends LF): httpx's aiter_lines decodes text and splits in
            # Python per line, twice the cost for what is one split per network read here.
            # The deltas of one network read go on as ONE delta: one token per read when the service keeps
            # up (nothing changes), fewer, larger pieces when it falls behind under load, so that every
            # layer above (pipeline events, SSE chunks, socket writes) does less work exactly when CPU is
            # short. vLLM's own engine merges outputs for a lagging consumer the same way.
            # Read to the end even after [DONE], so the connection goes back to the pool.
            rest = b""
            async for data in response.aiter_bytes():
                lines = (rest + data if rest else data).split(b"\n")
                rest = lines.pop()
                pieces: list[str] = []
                for line in lines:
                    if done or not line.startswith(b"data:"):
                        continue  # blank separators, comments (keep-alives), other SSE fields
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        done = True
                        continue
                    chunk = orjson.loads(payload)  # a quarter of json.loads' time, once per token
                    if "error" in chunk:
                        if pieces:
                            yield StreamDelta("".join(pieces))
                        raw = payload[:_MAX_ERROR_TEXT].decode(errors="replace")
                        message = _redact(_error_fields(chunk)[0] or raw, target)
                        raise UpstreamUnavailable(f"upstream {target.label} failed mid-stream: {message}")
                    choices = chunk.get("choices")
                    if choices:
                        choice = choices[0]
                        delta = choice.get("delta")
                        text = delta.get("content") if delta else None
                        if text:
                            pieces.append(text)
                        if choice.get("finish_reason"):
                            finish_reason = choice["finish_reason"]
                    if chunk.get("usage"):
                        usage = _usage(chunk["usage"])
                if pieces:
                    yield StreamDelta(pieces[0] if len(pieces) == 1 else "".join(pieces))
            if rest.startswith(b"data:") and rest[5:].strip() == b"[DONE]":
                done = True  # the last line came without its line end
        except httpx.TransportError as exc:
            raise _transport_error(target, exc) from exc
        except (ValueError, LookupError, TypeError, AttributeError) as exc:
            raise UpstreamUnavailable(f"upstream {target.label} sent an unreadable stream chunk ({exc!r})") from exc
        finally:
            await response.aclose()
        if not done and finish_reason is None:
            raise UpstreamUnavailable(f"upstream {target.label} ended the stream before it finished")
        yield StreamDelta("", finish_reason=finish_reason, usage=usage)

    async def _within_context(self, target: _Target, sampling: Sampling,
                              call: Callable[[Sampling], Awaitable[UpstreamResponse]]) -> UpstreamResponse:
        """`call(sampling)`; when the prompt fits but prompt + max_tokens does not, `call` again without
        max_tokens, so the upstream generates what fits (a cap, not a demand)."""
        try:
            return await call(sampling)
        except ContextLengthExceeded:
            if not self._capped(target, sampling):
                raise
            return await call(replace(sampling, max_tokens=None))

    async def _post_stream(self, target: _Target, body: bytes) -> UpstreamResponse:
        """The 200 response of a streamed request, body unread."""
        try:
            response = await self._send(target, target.chat_url, body)
            if response.status_code == 200:
                return response
            await _read_and_close(response)
        except httpx.TransportError as exc:
            raise _transport_error(target, exc) from exc
        _raise_status(target, response)

    @staticmethod
    def _capped(target: _Target, sampling: Sampling) -> bool:
        """Whether requests with `sampling` send max_tokens (see _body)."""
        return sampling.max_tokens is not None and (target.max_model_len is None
                                                    or sampling.max_tokens < target.max_model_len)

    async def prompt_size(self, role: Role, messages: Sequence[Message]) -> PromptSize | None:
        """Not counted yet: no context budget for upstreams."""
        return None

    async def check_health(self) -> None:
        """GET /models on each distinct upstream; raise UpstreamUnavailable if one does not answer 200."""
        if not self._started:
            raise UpstreamUnavailable("the openai backend is not started")
        distinct = {(str(t.models_url), t.api_key): t for t in self._targets.values()}
        for target in distinct.values():
            try:
                await (self._get_models(target) if target.model else self._discover(target))
            except BackendError as exc:
                raise UpstreamUnavailable(exc.message) from exc
