"""A server process the soak stops (gracefully or not) and starts again on the same port.

Like scripts.launch.running, but asynchronous (the soak's clients keep running while a server
starts or stops) and repeatable: each start appends to the same log. Every process runs in a
group of its own, and the whole group is signalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import httpx


class Restartable:
    def __init__(self, name: str, command: Sequence[str], health_url: str, log_path: Path) -> None:
        self.name = name
        self.command = list(command)
        self.health_url = health_url
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    async def start(self, timeout: float) -> float:
        """Start the process and wait until its health URL answers 200; the seconds that took."""
        begin = time.monotonic()
        with open(self.log_path, "ab") as log:
            log.write(f"--- {self.name} started at {time.strftime('%H:%M:%S')}\n".encode())
            log.flush()
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.process.returncode} (log: {self.log_path})")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(self.health_url)).status_code == 200:
                        return time.monotonic() - begin
                if time.monotonic() - begin > timeout:
                    raise TimeoutError(f"{self.name} not healthy after {timeout:.0f} s (log: {self.log_path})")
                await asyncio.sleep(0.1)

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, sig)

    async def wait(self, timeout: float) -> int | None:
        """The exit code once the process has exited, or None if it is still running after `timeout` s."""
        assert self.process is not None
        process = self.process
        with contextlib.suppress(subprocess.TimeoutExpired):
            return await asyncio.to_thread(process.wait, timeout)
        return None

    async def terminate(self, timeout: float) -> tuple[int | None, float]:
        """SIGTERM, then wait up to `timeout` s: (exit code, or None if it had to be killed; seconds taken)."""
        begin = time.monotonic()
        self._signal(signal.SIGTERM)
        code = await self.wait(timeout)
        taken = time.monotonic() - begin
        await self.kill()  # what the process left behind in its group, or the process itself
        return code, taken

    async def kill(self) -> None:
        """SIGKILL the group (a crash, or the end of the soak) and reap the process."""
        self._signal(signal.SIGKILL)
        if self.process is not None:
            await self.wait(10)
