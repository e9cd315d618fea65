"""docker/Dockerfile.gateway's install steps, replayed: its COPY and RUN lines in a scratch
virtualenv instead of python:3.11-slim, then the gateway must start from what they installed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest

from scripts.launch import free_port, running
from tests.deploy.dockerfile import instructions, pip_requirements, replay_copy
from tests.deploy.tools import DOCKER, ROOT

GATEWAY = DOCKER / "Dockerfile.gateway"
# What the gateway leaves out of the package's dependencies, and why: training imports it, serving does not.
LEFT_OUT = {"transformers"}


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=~! ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_gateway_installs_every_dependency_but_the_training_ones() -> None:
    runs = [i.arguments for i in instructions(GATEWAY) if i.keyword == "RUN"]
    installed = {_name(r) for run in runs for r in pip_requirements(run) if r != "."}
    declared = {_name(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    assert installed == declared - LEFT_OUT


@pytest.mark.integration
def test_gateway_install_steps_give_a_gateway_that_serves(tmp_path: Path) -> None:
    venv, context = tmp_path / "venv", tmp_path / "srv" / "aft"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}
    context.mkdir(parents=True)
    for step in instructions(GATEWAY):
        if step.keyword == "COPY":
            replay_copy(step.arguments, ROOT, context)
        elif step.keyword == "RUN":
            subprocess.run(["bash", "-c", step.arguments], cwd=context, env=env, check=True, timeout=600)

    # Run from outside the copied sources, so only what pip installed is imported.
    imported = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import sys, app.main, serving.backends.openai; print(' '.join(sorted(sys.modules)))"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert not {"torch", "vllm", "transformers"} & set(imported)
    assert "app" in imported and str(venv) in subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import app; print(app.__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout

    port = free_port()
    command = [str(venv / "bin" / "aft"), "serve", "--backend", "openai", "--port", str(port),
               "--upstream-url", f"http://127.0.0.1:{free_port()}/v1"]
    with running(command, f"http://127.0.0.1:{port}/metrics", tmp_path / "gateway.log", cwd=tmp_path):
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
    # Nothing listens upstream: the gateway is up and says so in the OpenAI error shape.
    assert health.status_code == 502
    assert health.json()["error"]["type"] == "server_error"
