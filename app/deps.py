"""FastAPI dependencies as Annotated aliases.

async on purpose: FastAPI runs plain `def` dependencies in its thread pool, and a thread hop per
request for reading app.state is work for nothing.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.chat import ChatService
from app.errors import UnsupportedMediaType
from app.lifecycle import Lifecycle
from app.metrics import Metrics
from app.responses.service import ResponsesService
from app.settings import Settings
from serving.backends.base import Backend


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def get_chat(request: Request) -> ChatService:
    chat: ChatService = request.app.state.chat
    return chat


async def get_responses(request: Request) -> ResponsesService:
    responses: ResponsesService = request.app.state.responses
    return responses


async def get_backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


async def get_lifecycle(request: Request) -> Lifecycle:
    lifecycle: Lifecycle = request.app.state.lifecycle
    return lifecycle


async def require_json(request: Request) -> None:
    """Refuse a body that is not declared JSON: a browser sends text/plain cross-site without asking first."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != "application/json" and not (kind.startswith("application/") and kind.endswith("+json")):
        sent = kind[:100] or "no content type"
        raise UnsupportedMediaType(f"send the request body as application/json, not '{sent}'",
                                   code="unsupported_media_type")


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ChatDep = Annotated[ChatService, Depends(get_chat)]
ResponsesDep = Annotated[ResponsesService, Depends(get_responses)]
LifecycleDep = Annotated[Lifecycle, Depends(get_lifecycle)]
BackendDep = Annotated[Backend, Depends(get_backend)]
JSONBody = Annotated[None, Depends(require_json)]
