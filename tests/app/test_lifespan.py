"""The app's lifespan: the backend starts and closes with it; `aft serve` freezes the startup heap."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI

from app import cli
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


def test_aft_serve_asks_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    import app.main

    built: list[dict[str, Any]] = []
    monkeypatch.setattr(app.main, "create_app", lambda settings, **options: built.append(options))
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: None)
    cli.serve(Settings(backend="openai", upstream_url="http://upstream.invalid/v1"))
    assert built == [{"freeze_heap": True}]
