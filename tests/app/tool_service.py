"""The `service` fixture: the app `aft serve --backend openai` builds (lifespan and all) over a scripted
upstream model that calls a tool (tests/tool_upstream.py), and an OpenAI SDK client for it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from app.main import create_app
from tests.app.conftest import make_settings
from tests.scripted_http import upstream
from tests.tool_upstream import ToolModel


@dataclass
class Running:
    """The service as a test drives it: the OpenAI SDK, plain HTTP, and the upstream model's log."""

    sdk: openai.AsyncOpenAI
    http: httpx.AsyncClient
    model: ToolModel


Service = Callable[..., contextlib.AbstractAsyncContextManager[Running]]


@pytest.fixture(name="service")
def service_fixture() -> Service:
    @contextlib.asynccontextmanager
    async def serve(**settings: Any) -> AsyncIterator[Running]:
        model = ToolModel()
        async with upstream(model) as server:
            app = create_app(make_settings(upstream_url=server.url + "/v1", model="m", **settings))
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://aft.test") as client:
                    yield Running(openai.AsyncOpenAI(base_url="http://aft.test/v1", api_key="unused",
                                                     http_client=client, max_retries=0), client, model)
    return serve


