"""CPU time and peak memory of a server process, read from /proc (through psutil)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import psutil


class ProcessWatch:
    """The process's own CPU time (user + system) and resident memory, with a resettable peak."""

    def __init__(self, pid: int, *, tree: bool = False) -> None:
        self.process = psutil.Process(pid)
        self.tree = tree
        """Also report the CPU of its child processes (vLLM's engine core and workers)."""
        self.sampled_peak = 0
        self._sampler: asyncio.Task[None] | None = None
        self._kernel_peak = False

    def cpu_seconds(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def tree_cpu_seconds(self) -> float:
        total = self.cpu_seconds()
        for child in self.process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                times = child.cpu_times()
                total += times.user + times.system
        return total

    def rss(self) -> int:
        return int(self.process.memory_info().rss)

    def reset_peak(self) -> None:
        """Start a new peak: the kernel's high-water mark (VmHWM) is reset to the current RSS where
        allowed (`5 > clear_refs`); RSS is also sampled every 20 ms in case it is not."""
        self.sampled_peak = self.rss()
        self._kernel_peak = False
        with contextlib.suppress(OSError):
            Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
            self._kernel_peak = True

    def peak_rss(self) -> int:
        if self._kernel_peak:
            with contextlib.suppress(OSError, ValueError):
                for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        return max(int(line.split()[1]) * 1024, self.sampled_peak)
        return self.sampled_peak

    async def _sample(self) -> None:
        while True:
            with contextlib.suppress(psutil.Error):
                self.sampled_peak = max(self.sampled_peak, self.rss())
            await asyncio.sleep(0.02)

    def start_sampling(self) -> None:
        self._sampler = asyncio.get_running_loop().create_task(self._sample())

    async def stop_sampling(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None


def self_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system
