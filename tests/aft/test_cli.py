"""The `aft` command: one word picks the subcommand, which gets the rest; serving never loads training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from aft.cli import COMMANDS, main

ROOT = Path(__file__).parents[2]


def test_the_rest_of_the_line_goes_to_the_subcommand(monkeypatch: pytest.MonkeyPatch) -> None:
    import app.cli

    seen: list[tuple[list[str], str]] = []
    monkeypatch.setattr(app.cli, "main", lambda argv, prog: seen.append((argv, prog)) or 0)
    assert main(["serve", "--help", "--model", "m"]) == 0
    assert seen == [(["--help", "--model", "m"], "aft serve")]


def test_every_subcommand_has_main_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    listing = capsys.readouterr().out
    assert all(name in listing and help_text[:20] in " ".join(listing.split())
               for name, (_, help_text) in COMMANDS.items())


@pytest.mark.parametrize("argv", [[], ["nope"]])
def test_a_missing_or_unknown_subcommand_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout


def test_aft_serve_never_imports_training() -> None:
    loaded = ("'training' in sys.modules or any(m.split('.')[0] in ('torch', 'trl', 'peft', 'datasets', 'vllm') "
              "for m in sys.modules)")
    # The whole serve path short of the server: flags, settings, the app's modules.
    assert run("import sys, app.main; from aft.cli import main; from app.cli import settings_from_args; "
               f"settings_from_args(['--model', 'm']); print({loaded})").strip() == "False"
    result = subprocess.run([sys.executable, "-m", "aft", "serve", "--help"], capture_output=True, text=True,
                            cwd=ROOT, check=True)
    assert result.stdout.startswith("usage: aft serve")


def test_python_m_aft_is_the_command() -> None:
    result = subprocess.run([sys.executable, "-m", "aft", "eval", "--model", "/nowhere/aft", "--baseline",
                             "/nowhere/sft"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == "aft eval: --model /nowhere/aft: no such checkpoint directory"
