"""The `aft` command. `aft serve` takes every Settings field as a flag (AFT_* variables too)."""

from __future__ import annotations

import argparse
import logging
import sys
import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from app.settings import Settings

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


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aft", description="Aggregation fine-tuned models: serve them.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="Run the OpenAI-compatible propose-and-aggregate service.",
        description="Serve /v1/chat/completions with propose-and-aggregate. Every flag can also be set "
                    "as an AFT_<NAME> environment variable (e.g. AFT_UPSTREAM_URL); flags win.")
    _add_settings_flags(serve)
    return parser


def serve(settings: Settings) -> None:
    import uvicorn

    from app.main import create_app

    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level=settings.log_level.lower(), timeout_graceful_shutdown=30)


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(make_parser().parse_args(argv))
    command = args.pop("command")
    if command == "serve":
        try:
            settings = Settings(**args)
        except ValidationError as exc:
            for error in exc.errors():
                where = ".".join(str(p) for p in error["loc"])
                print(f"aft serve: {where + ': ' if where else ''}{error['msg']}", file=sys.stderr)
            return 2
        serve(settings)
    return 0


if __name__ == "__main__":  # the vllm engine spawns processes that re-import __main__
    sys.exit(main())
