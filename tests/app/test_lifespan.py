"""The app's lifespan: the backend starts and closes with it; `aft serve` freezes the startup heap."""

from __future__ import annotations

import gc
from typing import Any

import pytest
from conftest import make_settings
from fakes import ScriptedBackend

from app import cli
from app.main import create_app


@pytest.mark.parametrize("freeze", [True, False])
async def test_the_startup_heap_is_frozen_once_the_backend_runs_when_asked(backend: ScriptedBackend,
                                                                           freeze: bool) -> None:
    app = create_app(make_settings(), backend=backend, freeze_heap=freeze)
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
    cli.serve(make_settings())
    assert built == [{"freeze_heap": True}]
