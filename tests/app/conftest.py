"""App tests: the real FastAPI app over httpx's ASGITransport, a scripted backend behind it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.settings import Settings
from serving.backends.base import Role, Sampling, StreamDelta
from serving.format import Message
from tests.fakes import MODEL, Call, ScriptedBackend


def make_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {"backend": "openai", "upstream_url": "http://upstream.invalid/v1",
                            "served_model_name": MODEL}
    return Settings(**(base | overrides))


@dataclass
class GatedBackend(ScriptedBackend):
    """A ScriptedBackend whose calls say when they arrive (`called`) and, while `held`, wait for
    `go` before answering: tests order events by these, never by sleeping. (`delay` is not used.)"""

    called: asyncio.Event = field(default_factory=asyncio.Event)
    go: asyncio.Event = field(default_factory=asyncio.Event)
    held: bool = False

    def _record(self, call: Call) -> None:
        self.called.set()
        super()._record(call)

    async def _wait(self) -> None:
        if self.held:
            try:
                await self.go.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise

    async def stream(self, role: Role, messages: Sequence[Message],
                     sampling: Sampling) -> AsyncGenerator[StreamDelta, None]:
        call = Call(role, list(messages), sampling, 1, True)
        self._record(call)
        await self._wait()
        text = self.reply(call, 0)
        for i, word in enumerate(text.split(" ")):
            yield StreamDelta(word if i == 0 else " " + word)
        yield StreamDelta("", "stop", self.usage(call, [text]))


@pytest.fixture
def backend() -> GatedBackend:
    return GatedBackend()


@pytest.fixture
def app_factory(backend: ScriptedBackend) -> Callable[..., FastAPI]:
    def build(*, freeze_heap: bool = False, **overrides: Any) -> FastAPI:
        return create_app(make_settings(**overrides), backend=backend, freeze_heap=freeze_heap)
    return build


@pytest.fixture
async def client(app_factory: Callable[..., FastAPI]) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app_factory())
    async with httpx.AsyncClient(transport=transport, base_url="http://aft.test") as c:
        yield c


@pytest.fixture
async def sdk(client: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url="http://aft.test/v1", api_key="unused", http_client=client,
                              max_retries=0)


class ASGIClient:
    """Drives the ASGI app by hand, as a server would: the request's body comes from `parts`,
    the client disconnects once `leave` is set (`complete` False: the body is cut short), and
    every message the app sends is kept. `on_send` sees each message as it is sent (a test's trigger)."""

    def __init__(self, app: Any, body: dict[str, Any] | None = None, *, parts: list[bytes] | None = None,
                 complete: bool = True, content_type: bytes = b"application/json") -> None:
        self.app = app
        self.complete = complete  # False: the body's last part says more is coming, and none does
        raw = json.dumps(body).encode() if body is not None else b""
        self.parts = parts if parts is not None else [raw]
        self.headers = [(b"content-type", content_type)]
        if parts is None:
            self.headers.append((b"content-length", str(len(raw)).encode()))
        self.leave = asyncio.Event()
        self.sent: list[dict[str, Any]] = []
        self.on_send: Callable[[dict[str, Any]], Awaitable[None] | None] = lambda message: None

    async def receive(self) -> dict[str, Any]:
        if self.parts:
            part = self.parts.pop(0)
            return {"type": "http.request", "body": part, "more_body": bool(self.parts) or not self.complete}
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        pending = self.on_send(message)
        if pending is not None:
            await pending

    async def post(self, path: str = "/v1/chat/completions") -> None:
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
                 "query_string": b"", "root_path": "", "server": ("t", 80), "client": ("c", 1),
                 "headers": self.headers}
        await asyncio.wait_for(self.app(scope, self.receive, self.send), timeout=10)

    @property
    def status(self) -> int:
        return int(next(m["status"] for m in self.sent if m["type"] == "http.response.start"))

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")
