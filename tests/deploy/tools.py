"""Paths of what tests/deploy checks, and the command-line tools of the [deploy] extra."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
KUBERNETES = ROOT / "deploy" / "kubernetes"
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"


def dockerfiles() -> list[Path]:
    return sorted(DOCKER.glob("Dockerfile*"))


def tool(name: str) -> str:
    """The executable `name` beside this interpreter (the venv's bin), else on PATH."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        raise AssertionError(f"{name} is missing: install the [deploy] extra (make install)")
    return found


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
