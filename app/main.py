"""create_app(settings): assemble the service. Nothing here but wiring."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.access_log import AccessLog
from app.backend import build_backend
from app.chat import ChatService
from app.drain import CloseConnectionsWhileDraining
from app.errors import install_error_handlers
from app.lifecycle import Lifecycle
from app.limits import BodyLimits
from app.metrics import Metrics
from app.responses.service import ResponsesService
from app.routes import chat, docs, health, models, playground, responses
from app.settings import Settings
from serving.backends.base import Backend
from serving.pipeline import Pipeline

logger = logging.getLogger(__name__)


def create_app(settings: Settings, backend: Backend | None = None, *, freeze_heap: bool = False) -> FastAPI:
    """The ASGI app. `backend` is injectable (tests); by default it is built from settings.

    freeze_heap (`aft serve` sets it): once the backend has started, move every object alive to the
    garbage collector's permanent generation, as vLLM's own server does. The startup heap (FastAPI,
    pydantic, the engine) never becomes garbage; frozen, the collector's full passes stop walking it.
    Not for processes that build many apps (tests): cyclic garbage frozen there is never freed."""
    backend = backend or build_backend(settings)
    lifecycle = Lifecycle(settings.max_concurrent_requests, settings.request_timeout, settings.shutdown_timeout)
    metrics = Metrics(retries=lambda: getattr(backend, "retried", {}), in_flight=lambda: lifecycle.in_flight)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        logger.info("starting %s backend for model %s", settings.backend, settings.model_id)
        await backend.start()
        if freeze_heap:
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            try:
                await backend.close()
            except Exception as exc:  # a dead engine may fail to stop cleanly; the process ends anyway
                logger.warning("the backend did not close cleanly: %s: %s", type(exc).__name__, exc)

    # The documents are routes of our own (app/routes/docs.py).
    app = FastAPI(title="AFT propose-and-aggregate service", version="0.1.0", lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.backend = backend
    app.state.metrics = metrics
    app.state.lifecycle = lifecycle
    pipeline = Pipeline(backend, min_draft_tokens=settings.min_draft_tokens,
                        aggregation_format=settings.aggregation_format)
    app.state.chat = ChatService(settings, pipeline, metrics, lifecycle)
    app.state.responses = ResponsesService(app.state.chat)  # the same chat path, another wire format
    install_error_handlers(app)
    app.add_middleware(BodyLimits, max_bytes=settings.max_request_bytes, read_timeout=settings.body_read_timeout)
    app.add_middleware(AccessLog)  # the outermost but one, so that it sees every response
    app.add_middleware(CloseConnectionsWhileDraining, lifecycle=lifecycle)  # outermost: every response
    for router in (chat.router, responses.router, models.router, health.router, docs.router, playground.router):
        app.include_router(router)
    return app
