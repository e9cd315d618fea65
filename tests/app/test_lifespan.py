"""The app's lifespan: the backend starts and closes with it; `aft serve` freezes the startup heap."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI

from app import cli, server
from app.settings import Settings
from tests.fakes import ScriptedBackend


@pytest.mark.parametrize("freeze", [True, False])
async def test_the_startup_heap_is_frozen_once_the_backend_runs_when_asked(
        app_factory: Callable[..., FastAPI], backend: ScriptedBackend, freeze: bool) -> None:
    app = app_factory(freeze_heap=freeze)
    assert gc.get_freeze_count() == 0
    try:
        async with app.router.lifespan_context(app):
            assert backend.started and (gc.get_freeze_count() > 0) == freeze
        assert backend.closed
    finally:
        gc.unfreeze()


def test_aft_serve_asks_for_it_and_exits_with_the_lifecycles_code(monkeypatch: pytest.MonkeyPatch) -> None:
    import app.main

    built: list[dict[str, Any]] = []
    real_create_app = app.main.create_app

    def create_app(settings: Settings, **options: Any) -> FastAPI:
        built.append(options)
        return real_create_app(settings, backend=ScriptedBackend())

    def run(self: server.Server) -> None:
        self.started = True
        self.lifecycle.exit_code = 1

    monkeypatch.setattr(app.main, "create_app", create_app)
    monkeypatch.setattr(server.Server, "run", run)
    assert cli.serve(Settings(backend="openai", upstream_url="http://upstream.invalid/v1")) == 1
    assert built == [{"freeze_heap": True}]
