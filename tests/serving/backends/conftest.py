"""Fixtures of the backends' tests: scripted upstreams on loopback, a port nothing listens on."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from tests.serving.backends.scripted_upstreams import Make, Upstreams


@pytest.fixture
async def ups() -> AsyncIterator[Upstreams]:
    async with contextlib.AsyncExitStack() as stack:
        yield Upstreams(stack)


@pytest.fixture
def make(ups: Upstreams) -> Make:
    return ups.make


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
