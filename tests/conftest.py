"""Session fixtures shared by every test: a tiny local model, and a real vLLM OpenAI server over it."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.launch import CPU_ENGINE_ENV, free_port, running, vllm_server_command


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Llama checkpoint with tokenizer and chat template (about 4 s to build)."""
    from training.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "tiny")


@pytest.fixture(scope="session")
def vllm_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Run vLLM's OpenAI-compatible server on loopback over the tiny model; yield its /v1 base URL.

    The served model name is the checkpoint path (vLLM's default), as GET /v1/models reports it.
    """
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed")
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    with running(vllm_server_command(tiny_model, port), f"http://127.0.0.1:{port}/health", log,
                 env=CPU_ENGINE_ENV, timeout=180):
        yield f"http://127.0.0.1:{port}/v1"
