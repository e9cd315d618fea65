"""create_app(settings): assemble the service. Nothing here but wiring."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.backend import build_backend
from app.chat import ChatService
from app.errors import install_error_handlers
from app.limits import BodySizeLimit
from app.metrics import Metrics
from app.routes import chat, health, models, playground
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
    metrics = Metrics()

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
            await backend.close()

    app = FastAPI(title="AFT propose-and-aggregate service", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.backend = backend
    app.state.metrics = metrics
    app.state.chat = ChatService(settings, Pipeline(backend), metrics)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes,
                       on_refusal=lambda path: metrics.refused(path, 413))
    for router in (chat.router, models.router, health.router, playground.router):
        app.include_router(router)
    return app
