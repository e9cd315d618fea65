"""The `aft` command: a subcommand word, then that subcommand's own command line.

Each subcommand is a module with `main(argv, prog) -> int`, imported only when it runs:
`aft serve` is app/cli.py, the others are training modules. This module imports neither
package, so `aft serve` never loads torch or TRL, and a serving host needs none of the
training extras.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module with main(argv, prog), one-line help)
COMMANDS = {
    "serve": ("app.cli", "Run the OpenAI-compatible propose-and-aggregate service."),
    "data": ("training.data_cli", "Build AFT training rows (off-policy, on-policy) and validate them."),
    "train": ("training.train", "Fine-tune a model on AFT rows with TRL's SFTTrainer (full or LoRA)."),
    "export": ("training.export", "Write a checkpoint `aft serve` loads as it is, with its aft.json."),
    "eval": ("training.evaluate", "Compare SFT, majority vote and AFT propose-and-aggregate on held-out problems."),
    "toy": ("training.toy", "Run the whole recipe on the toy arithmetic task: SFT, drafts, AFT, evaluation."),
}


def make_parser() -> argparse.ArgumentParser:
    """The parser of the subcommand word alone (its help lists the subcommands)."""
    parser = argparse.ArgumentParser(
        prog="aft", description="Aggregation fine-tuned models: serve and train them. "
                                "`aft COMMAND --help` describes a command's flags.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        commands.add_parser(name, help=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # Only the first word is this parser's: everything after it, --help included, is the subcommand's.
    command: str = make_parser().parse_args(args[:1]).command
    module = importlib.import_module(COMMANDS[command][0])
    code: int = module.main(args[1:], prog=f"aft {command}")
    return code
