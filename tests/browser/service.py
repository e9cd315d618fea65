"""The playground's real surroundings for a browser: `aft serve --backend openai` in front of the
stub upstream (bench/stub.py), on loopback, and Debian's Chromium driven by playwright."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

from playwright.sync_api import Browser, sync_playwright

from bench.run import TIMING, gateway_command, stub_command
from scripts.launch import free_port, running

API_KEY = "playground-test-key"
# The page's form starts from these; they differ from the settings' own defaults on purpose.
DEFAULT_PROPOSALS, DEFAULT_ROUNDS = 4, 2


@dataclass
class Service:
    url: str
    """The service's root, http://127.0.0.1:PORT (the page is at url + "/playground")."""
    upstream: Popen[bytes]
    """The stub upstream's process: stop it to make the service's upstream calls fail."""


@contextlib.contextmanager
def playground_service(logs: Path, *stub_flags: str, service_flags: tuple[str, ...] = ()) -> Iterator[Service]:
    """The stub (with `stub_flags`, e.g. its faults), and the service in front of it with an API key,
    DEFAULT_PROPOSALS/ROUNDS and `service_flags`."""
    stub_port, port = free_port(), free_port()
    service = [*gateway_command(port, stub_port), "--api-key", API_KEY,
               "--default-proposals", str(DEFAULT_PROPOSALS), "--default-rounds", str(DEFAULT_ROUNDS),
               *service_flags]
    stub = [*stub_command(stub_port, TIMING), *stub_flags]
    with running(stub, f"http://127.0.0.1:{stub_port}/health", logs / "stub.log", timeout=30) as upstream, \
            running(service, f"http://127.0.0.1:{port}/health", logs / "service.log", timeout=60):
        yield Service(f"http://127.0.0.1:{port}", upstream)


def chromium_path() -> str | None:
    """Debian's Chromium (playwright's own browser download is not used: CI cannot reach it)."""
    return shutil.which("chromium")


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    executable = chromium_path()
    if executable is None:
        raise FileNotFoundError("no chromium on PATH: apt-get install -y chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        try:
            yield browser
        finally:
            browser.close()
