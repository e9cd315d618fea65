"""A backend over OpenAI-compatible Chat Completions upstreams (typically `vllm serve`).

One shared httpx client serves both roles, which may go to different deployments.
n samples are ONE upstream call with `n`, so they share the prompt's KV cache.
Closing a stream or cancelling a call closes its upstream connection: vLLM aborts.
`timeout` bounds each wait on the upstream (a whole non-streamed call; the gap
between two chunks of a stream); `connect_timeout` bounds connecting and health checks.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, replace
from typing import Any, NoReturn

import httpx

from serving.backends.base import Completion, Generation, Role, Sampling, StreamDelta, Usage
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
    chat_url: str
    models_url: str
    model: str
    headers: dict[str, str]
    api_key: str | None


def _error_fields(body: Any) -> tuple[str | None, str | None]:
    """Message and param of an error body: OpenAI's {"error": {...}} or vLLM's older {"message": ...}."""
    error = (body.get("error") or body) if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        param = error.get("param")
        return error["message"], param if isinstance(param, str) else None
    return (error, None) if isinstance(error, str) else (None, None)


def _redact(text: str, target: _Target) -> str:
    return text.replace(target.api_key, "***") if target.api_key else text


def _raise_status(target: _Target, response: httpx.Response) -> NoReturn:
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


class OpenAIBackend:
    """The Backend protocol over one or two OpenAI-compatible upstreams."""

    def __init__(self, proposer: Upstream, aggregator: Upstream | None = None, *, timeout: float = 600.0,
                 connect_timeout: float = 10.0, max_connections: int = 1024,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._upstreams: dict[Role, Upstream] = {"proposer": proposer, "aggregator": aggregator or proposer}
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._health_timeout = httpx.Timeout(connect_timeout)
        self._limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections,
                                    keepalive_expiry=_KEEPALIVE_EXPIRY)
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._targets: dict[Role, _Target] = {}

    async def start(self) -> None:
        """Open the connection pool and resolve each upstream's model (discovering it if unset)."""
        if self._client is not None:
            return
        self._client = httpx.AsyncClient(transport=self._transport, timeout=self._timeout, limits=self._limits)
        try:
            resolved: dict[Upstream, _Target] = {}
            for role, upstream in self._upstreams.items():
                if upstream not in resolved:
                    resolved[upstream] = await self._resolve(upstream)
                self._targets[role] = resolved[upstream]
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the pool; requests still in flight fail and their upstream connections close."""
        client, self._client = self._client, None
        self._targets = {}
        if client is not None:
            await client.aclose()

    async def _resolve(self, upstream: Upstream) -> _Target:
        base = upstream.base_url.rstrip("/")
        url = httpx.URL(base)  # credentials in the URL stay out of messages
        label = str(url.copy_with(username=None, password=None)) if url.userinfo else base
        headers = {"Authorization": f"Bearer {upstream.api_key}"} if upstream.api_key else {}
        target = _Target(label, base + "/chat/completions", base + "/models", upstream.model or "", headers,
                         upstream.api_key)
        if upstream.model:
            return target
        try:
            model = (await self._get_models(target))["data"][0]["id"]
        except (BackendError, ValueError, LookupError, TypeError) as exc:
            detail = exc.message if isinstance(exc, BackendError) else f"unexpected /models answer ({exc!r})"
            raise UpstreamUnavailable(f"could not discover the model served at {label}: {detail}; "
                                      "configure the model name explicitly") from exc
        return replace(target, model=str(model))

    async def _get_models(self, target: _Target) -> Any:
        client = self._require_client()
        try:
            response = await client.get(target.models_url, headers=target.headers, timeout=self._health_timeout)
        except httpx.TransportError as exc:
            raise _transport_error(target, exc) from exc
        if response.status_code != 200:
            _raise_status(target, response)
        return response.json()

    def _require_client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("OpenAIBackend used before start() or after close()")
        return self._client

    @staticmethod
    def _body(target: _Target, messages: Sequence[Message], sampling: Sampling, n: int) -> dict[str, Any]:
        body: dict[str, Any] = {"model": target.model,
                                "messages": messages if isinstance(messages, list) else list(messages),
                                "n": n, "temperature": sampling.temperature, "top_p": sampling.top_p}
        if sampling.max_tokens is not None:
            body["max_tokens"] = sampling.max_tokens
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.presence_penalty:
            body["presence_penalty"] = sampling.presence_penalty
        if sampling.frequency_penalty:
            body["frequency_penalty"] = sampling.frequency_penalty
        return body

    async def generate(self, role: Role, messages: Sequence[Message], sampling: Sampling,
                       n: int) -> Generation:
        """Sample `n` completions in ONE upstream request; usage is the upstream's (0 tokens if it omits it)."""
        client = self._require_client()
        target = self._targets[role]
        body = self._body(target, messages, sampling, n)
        try:
            response = await client.post(target.chat_url, json=body, headers=target.headers)
        except httpx.TransportError as exc:
            raise _transport_error(target, exc) from exc
        if response.status_code != 200:
            _raise_status(target, response)
        try:
            data = response.json()
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
        client = self._require_client()
        target = self._targets[role]
        body = self._body(target, messages, sampling, 1)
        body["stream"] = True
        body["stream_options"] = _STREAM_OPTIONS
        finish_reason: str | None = None
        usage = Usage(requests=1)
        done = False
        try:
            # Leaving this block early (the consumer closed us, or was cancelled) closes the response,
            # and with it the connection: vLLM sees the disconnect and aborts the request.
            async with client.stream("POST", target.chat_url, json=body, headers=target.headers) as response:
                if response.status_code != 200:
                    await response.aread()
                    _raise_status(target, response)
                # Read to the end even after [DONE], so the connection goes back to the pool.
                async for line in response.aiter_lines():
                    if done or not line.startswith("data:"):
                        continue  # blank separators, comments (keep-alives), other SSE fields
                    payload = line[5:]
                    if payload.strip() == "[DONE]":
                        done = True
                        continue
                    chunk = json.loads(payload)
                    if "error" in chunk:
                        message = _redact(_error_fields(chunk)[0] or payload[:_MAX_ERROR_TEXT], target)
                        raise UpstreamUnavailable(f"upstream {target.label} failed mid-stream: {message}")
                    choices = chunk.get("choices")
                    if choices:
                        choice = choices[0]
                        delta = choice.get("delta")
                        text = delta.get("content") if delta else None
                        if text:
                            yield StreamDelta(text)
                        if choice.get("finish_reason"):
                            finish_reason = choice["finish_reason"]
                    if chunk.get("usage"):
                        usage = _usage(chunk["usage"])
        except httpx.TransportError as exc:
            raise _transport_error(target, exc) from exc
        except (ValueError, LookupError, TypeError, AttributeError) as exc:
            raise UpstreamUnavailable(f"upstream {target.label} sent an unreadable stream chunk ({exc!r})") from exc
        if not done and finish_reason is None:
            raise UpstreamUnavailable(f"upstream {target.label} ended the stream before it finished")
        yield StreamDelta("", finish_reason=finish_reason, usage=usage)

    async def check_health(self) -> None:
        """GET /models on each distinct upstream; raise UpstreamUnavailable if one does not answer 200."""
        if self._client is None:
            raise UpstreamUnavailable("the openai backend is not started")
        distinct = {(t.models_url, t.api_key): t for t in self._targets.values()}
        for target in distinct.values():
            try:
                await self._get_models(target)
            except BackendError as exc:
                raise UpstreamUnavailable(exc.message) from exc
