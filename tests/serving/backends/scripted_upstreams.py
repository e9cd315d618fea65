"""Scripted upstreams for the openai backend's tests: answers in OpenAI's shapes, and backends over
loopback servers (tests/scripted_http.py) that a test's `ups` fixture closes when it ends."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx

from serving.backends.openai import OpenAIBackend
from serving.backends.openai_target import Upstream
from tests.scripted_http import Handler, upstream

KEY = "sk-secret-123"
Make = Callable[..., Awaitable[OpenAIBackend]]


def completion(*texts: str, usage: dict[str, int] | None = None, reason: str = "stop") -> dict[str, Any]:
    choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": reason}
               for i, t in enumerate(texts)]
    return {"choices": choices[::-1]} | ({"usage": usage} if usage else {})  # out of order on purpose


def sse(*events: dict[str, Any] | str) -> list[bytes]:
    return [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n".encode() for e in events]


def chunk(content: str | None = None, reason: str | None = None) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": reason}]}


class Chunks(httpx.AsyncByteStream):
    """A response body sent piece by piece; `gate` holds back every piece after the first."""

    def __init__(self, parts: list[bytes], gate: asyncio.Event | None = None) -> None:
        self.parts, self.gate = parts, gate

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i, part in enumerate(self.parts):
            if i and self.gate is not None:
                await self.gate.wait()
            yield part


class Upstreams:
    """Scripted upstreams on loopback and backends over them, all closed when the test ends."""

    def __init__(self, stack: contextlib.AsyncExitStack) -> None:
        self.stack = stack
        self.url = ""
        """The base URL (…/v1) of the upstream `make` served last."""

    async def serve(self, handler: Handler) -> str:
        server = await self.stack.enter_async_context(upstream(handler))
        return server.url + "/v1"

    async def backend(self, proposer: Upstream, aggregator: Upstream | None = None, **kwargs: Any) -> OpenAIBackend:
        backend = OpenAIBackend(proposer, aggregator, **kwargs)
        await backend.start()
        self.stack.push_async_callback(backend.close)
        return backend

    async def make(self, handler: Handler, model: str | None = "m", **kwargs: Any) -> OpenAIBackend:
        """A backend over one upstream answering with `handler` (model None: discovered)."""
        self.url = await self.serve(handler)
        return await self.backend(Upstream(self.url, model, KEY), **kwargs)


def recording(reply: Callable[[httpx.Request], httpx.Response]) -> tuple[list[httpx.Request], Handler]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return reply(request)
    return seen, handler
