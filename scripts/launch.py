"""Start a server process on loopback and wait until it answers; used by the demo, tests and benchmarks.

Each server runs in its own process group, so stopping it also stops what it
spawned (vLLM's engine core and workers); its log goes to a file, and the tail
of that file is shown when it fails to come up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

# The CPU build of vLLM sizes its KV cache from this (GiB); 1 is plenty for tiny models.
CPU_ENGINE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false"}
# Flags that let a tiny model start quickly on a CPU host.
CPU_ENGINE_FLAGS = ["--max-model-len", "2048", "--gpu-memory-utilization", "0.3", "--dtype", "float32"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def running(command: Sequence[str], health_url: str, log_path: Path, *, env: dict[str, str] | None = None,
            timeout: float = 600.0, cwd: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run `command` (in `cwd`) until the block ends; yield once GET `health_url` answers 200."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                   env={**os.environ, **(env or {})}, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command[0]} exited with {process.returncode}:\n{_tail(log_path)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(health_url, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{health_url} not ready after {timeout:.0f} s:\n{_tail(log_path)}")
            time.sleep(0.5)
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after `grace` seconds."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)
    # Children (engine core, workers) may outlive the leader: clear the whole group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


def vllm_server_command(model: str | Path, port: int) -> list[str]:
    """A plain vLLM OpenAI-compatible server (the `vllm` CLI entry of vllm-cpu is broken; -m works)."""
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
            "--host", "127.0.0.1", "--port", str(port), *CPU_ENGINE_FLAGS]


def aft_serve_command(port: int, *flags: str) -> list[str]:
    return [sys.executable, "-m", "aft", "serve", "--host", "127.0.0.1", "--port", str(port), *flags]
