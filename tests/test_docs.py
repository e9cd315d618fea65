"""The documentation keeps its promises: links resolve, the README stays a front door, and
docs/configuration.md names every setting, so a new setting without documentation fails here."""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

from app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200


@cache
def _tokens(page: Path) -> list[Token]:
    return MarkdownIt("commonmark").enable("table").parse(page.read_text(encoding="utf-8"))


def _targets(page: Path) -> Iterator[str]:
    """Every link and image target of a page; code blocks and code spans hold none."""
    for token in _tokens(page):
        for child in token.children or ():
            if child.type == "link_open":
                yield str(child.attrGet("href"))
            elif child.type == "image":
                yield str(child.attrGet("src"))


def _slug(heading: str) -> str:
    # GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens.
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


@cache
def _anchors(page: Path) -> frozenset[str]:
    tokens = _tokens(page)
    return frozenset(_slug(tokens[i + 1].content) for i, token in enumerate(tokens) if token.type == "heading_open")


def _broken(page: Path, target: str) -> str | None:
    """Why a relative link of `page` does not resolve, or None when it does (or is not relative)."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    file = (page.parent / unquote(parts.path)).resolve() if parts.path else page
    if not file.exists():
        return f"{target}: no such file"
    if parts.fragment and file.suffix == ".md" and parts.fragment not in _anchors(file):
        return f"{target}: no heading #{parts.fragment} in {file.name}"
    return None


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = [why for target in _targets(page) if (why := _broken(page, target))]
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[a](missing.md) [b](#title) [c](#nowhere) [d](https://example.com/x.md)\n"
                    "![e](missing.png)\n\n```\n[f](in-a-code-block.md)\n```\n", encoding="utf-8")
    assert [why for target in _targets(page) if (why := _broken(page, target))] == [
        "missing.md: no such file", "#nowhere: no heading #nowhere in page.md", "missing.png: no such file"]


def test_readme_is_a_front_door() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES
    assert "make demo" in text
    assert "make test" in text


def test_configuration_names_every_setting() -> None:
    text = CONFIGURATION.read_text(encoding="utf-8")
    prefix = str(Settings.model_config.get("env_prefix", ""))
    flags = set(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", text))
    variables = set(re.findall(rf"(?<!\w){prefix}[A-Z0-9_]+", text))
    undocumented = [name for name in Settings.model_fields
                    if "--" + name.replace("_", "-") not in flags and prefix + name.upper() not in variables]
    assert not undocumented, f"docs/configuration.md does not name these settings: {undocumented}"


def test_configuration_names_no_setting_that_does_not_exist() -> None:
    text = CONFIGURATION.read_text(encoding="utf-8")
    prefix = str(Settings.model_config.get("env_prefix", ""))
    known = {prefix + name.upper() for name in Settings.model_fields}
    stale = set(re.findall(rf"(?<!\w){prefix}[A-Z0-9_]+", text)) - known
    assert not stale, f"docs/configuration.md names variables that are no setting: {sorted(stale)}"
