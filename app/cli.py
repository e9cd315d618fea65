"""The `aft` command. `aft serve` takes every Settings field as a flag (AFT_* variables too).

`aft data`, `aft train` and `aft export` belong to training/: each module there has its own
`make_parser()` and `main(args)`, imported only when its command runs, so `aft serve` never
loads torch or TRL (and a serving host needs none of the training extras).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from app.settings import Settings, with_manifest_defaults
from serving.manifest import ManifestError

# Flags whose name differs from the field they set.
_FLAG_NAMES = {"api_keys": "api-key"}


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    for name, field in Settings.model_fields.items():
        flag = "--" + _FLAG_NAMES.get(name, name.replace("_", "-"))
        help_text = field.description or ""
        annotation = field.annotation
        args = typing.get_args(annotation)
        # Only flags given on the command line override the environment and defaults.
        common: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        if annotation is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif name == "api_keys":
            parser.add_argument(flag, action="append", metavar="KEY", **common)
        elif typing.get_origin(annotation) is typing.Literal:
            parser.add_argument(flag, choices=args, **common)
        else:
            union = isinstance(annotation, types.UnionType)
            inner: list[Any] = [a for a in args if a is not type(None)] if union else []
            kind = inner[0] if inner else annotation
            parser.add_argument(flag, type=int if kind is int else float if kind is float else str, **common)


# command -> (module with make_parser/main, one-line help)
TRAINING_COMMANDS = {
    "data": ("training.data_cli", "Build AFT training rows (off-policy, on-policy) and validate them."),
    "train": ("training.train", "Fine-tune a model on AFT rows with TRL's SFTTrainer (full or LoRA)."),
    "export": ("training.export", "Write a checkpoint `aft serve` loads as it is, with its aft.json."),
    "eval": ("training.evaluate", "Compare SFT, majority vote and AFT propose-and-aggregate on held-out problems."),
    "toy": ("training.toy", "Run the whole recipe on the toy arithmetic task: SFT, drafts, AFT, evaluation."),
}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aft", description="Aggregation fine-tuned models: serve and train them.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="Run the OpenAI-compatible propose-and-aggregate service.",
        description="Serve /v1/chat/completions with propose-and-aggregate. Every flag can also be set "
                    "as an AFT_<NAME> environment variable (e.g. AFT_UPSTREAM_URL); flags win. With --model "
                    "a checkpoint directory holding aft.json, its recommendations are the defaults.")
    _add_settings_flags(serve)
    for name, (_, help_text) in TRAINING_COMMANDS.items():
        # Their own parser takes every argument (and --help) once the module is loaded.
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


def _run_training_command(command: str, argv: list[str]) -> int:
    module = importlib.import_module(TRAINING_COMMANDS[command][0])
    code: int = module.main(module.make_parser(f"aft {command}").parse_args(argv))
    return code


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def serve(settings: Settings) -> int:
    """Run the service until it is stopped; the process's exit code (0: stopped by a signal, drained;
    1: the engine died, so an orchestrator restarts it; 3: it never started)."""
    import uvicorn

    from app.main import create_app
    from app.server import Server

    _configure_logging(settings)
    log_level = settings.log_level.lower()
    app = create_app(settings, freeze_heap=True)
    # loop/http "auto" already pick uvloop and httptools (uvicorn[standard]); named here so that a
    # missing one fails at start rather than silently costing CPU (bench/README.md: the profile).
    # One access-log line per request cost about 5% of the service's CPU under load and repeats what
    # /metrics counts; it is written at --log-level debug. The app drains itself (--shutdown-timeout)
    # before the server stops: uvicorn's own grace period only covers sending the last bytes.
    server = Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level=log_level,
                                   loop="uvloop", http="httptools", access_log=log_level == "debug",
                                   timeout_keep_alive=settings.keep_alive_timeout, timeout_graceful_shutdown=10),
                    app.state.lifecycle)
    server.run()
    if not server.started:
        return 3
    exit_code: int = app.state.lifecycle.exit_code
    return exit_code


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    namespace, rest = parser.parse_known_args(argv)
    args = vars(namespace)
    command = args.pop("command")
    if command in TRAINING_COMMANDS:
        return _run_training_command(command, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        settings = Settings(**args)
        _configure_logging(settings)  # before the manifest, whose defaults are logged
        settings = with_manifest_defaults(settings)
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"])
            print(f"aft serve: {where + ': ' if where else ''}{error['msg']}", file=sys.stderr)
        return 2
    except ManifestError as exc:
        print(f"aft serve: {exc}", file=sys.stderr)
        return 2
    return serve(settings)


if __name__ == "__main__":  # the vllm engine spawns processes that re-import __main__
    sys.exit(main())
