"""Every Dockerfile passes hadolint, and each rule it ignores is explained in a comment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.deploy.tools import ROOT, dockerfiles, run, tool


def test_the_images_are_all_checked() -> None:
    assert [p.name for p in dockerfiles()] == ["Dockerfile", "Dockerfile.cpu", "Dockerfile.gateway"]


@pytest.mark.parametrize("dockerfile", dockerfiles(), ids=lambda p: p.name)
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    result = run(tool("hadolint"), "--format", "json", str(dockerfile))
    findings = json.loads(result.stdout or "[]")
    assert not findings, "\n".join(f"{dockerfile.name}:{f['line']} {f['code']} {f['message']}" for f in findings)
    assert result.returncode == 0, result.stderr


def test_hadolint_reports_what_it_should(tmp_path: Path) -> None:
    # A shell-form ENTRYPOINT (signals never reach the server) must not pass.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nENTRYPOINT aft serve\n")
    result = run(tool("hadolint"), "--format", "json", str(bad))
    assert [f["code"] for f in json.loads(result.stdout)] == ["DL3025"]
    assert result.returncode != 0


@pytest.mark.parametrize("dockerfile", dockerfiles(), ids=lambda p: p.name)
def test_each_ignored_rule_says_why(dockerfile: Path) -> None:
    lines = dockerfile.read_text().splitlines()
    for number, line in enumerate(lines):
        if line.startswith("# hadolint ignore="):
            above = number - 1
            while above >= 0 and lines[above].startswith("#") and "hadolint" not in lines[above]:
                above -= 1
            assert above < number - 1, (f"{dockerfile.relative_to(ROOT)}:{number + 1}: the comment right above "
                                        f"`{line}` says why the rule does not apply")
