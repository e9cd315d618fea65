"""App tests: the real FastAPI app over httpx's ASGITransport, a scripted backend behind it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.settings import Settings
from tests.fakes import MODEL, ScriptedBackend


def make_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {"backend": "openai", "upstream_url": "http://upstream.invalid/v1",
                            "served_model_name": MODEL}
    return Settings(**(base | overrides))


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend()


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
