"""The instructions of a Dockerfile, read well enough to replay its COPY and RUN steps."""

from __future__ import annotations

import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def instructions(path: Path) -> list[Instruction]:
    """Each instruction with its continuation lines joined; comments dropped."""
    text = re.sub(r"\\\n(\s*#.*\n)*", " ", path.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            found.append(Instruction(keyword.upper(), " ".join(arguments.split())))
    return found


def pip_requirements(run: str) -> list[str]:
    """The requirements `pip install` is given in a RUN line's commands (`.` included)."""
    requirements = []
    for command in run.split("&&"):
        words = shlex.split(command)
        if words[:2] == ["pip", "install"]:
            requirements += [w for w in words[2:] if not w.startswith("-")]
    return requirements


def replay_copy(arguments: str, source_root: Path, workdir: Path) -> None:
    """COPY's rules: a directory's contents land in the destination; files land in it when it
    ends with "/" or several sources are given, else they become it."""
    *sources, destination = arguments.split()
    into = destination.endswith("/") or len(sources) > 1
    for source in sources:
        if (source_root / source).is_dir():
            shutil.copytree(source_root / source, workdir / destination, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target = workdir / destination / source if into else workdir / destination
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source_root / source, target)
