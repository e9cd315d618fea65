"""`aft serve --log-format json`: every line the process writes, uvicorn's included, is one JSON
object; uvicorn's own access log is off (the app writes its own line)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

import app.server
from app.cli import serve, settings_from_args


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


class FakeServer:
    """Takes uvicorn's config as the real server does, logs as uvicorn does at start, serves nothing."""

    def __init__(self, config: uvicorn.Config, lifecycle: Any) -> None:
        self.config = config
        self.started = True

    def run(self) -> None:
        logging.getLogger("uvicorn.error").info("Uvicorn running on http://%s:%d", self.config.host, self.config.port)
        logging.getLogger("uvicorn.access").info("an access line of uvicorn's own")


def test_json_lines_from_every_logger(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(app.server, "Server", FakeServer)
    settings = settings_from_args(["--backend", "openai", "--upstream-url", "http://u.invalid/v1",
                                   "--log-format", "json"])
    assert serve(settings) == 0
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert {"logger": "uvicorn.error", "level": "INFO", "message": "Uvicorn running on http://127.0.0.1:8000"
            }.items() <= lines[-1].items()
    assert all("access line of uvicorn" not in line["message"] for line in lines)


def test_text_is_the_default_and_other_formats_are_refused() -> None:
    settings = settings_from_args(["--backend", "openai", "--upstream-url", "http://u.invalid/v1"])
    assert settings.log_format == "text"
    with pytest.raises(ValueError, match="log_format"):
        settings_from_args(["--backend", "openai", "--upstream-url", "http://u.invalid/v1", "--log-format", "xml"])
