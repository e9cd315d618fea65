"""`aft serve`: every Settings field is a flag (pydantic-settings' CLI source), AFT_* variables too.

Flags win over AFT_* variables, which win over the checkpoint's aft.json recommendations
(`with_manifest_defaults`), which win over the built-in defaults. The `aft` command
(aft/cli.py) runs `main` here for `aft serve`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_settings import CliSettingsSource

from app.log_format import configure_logging
from app.settings import Settings, with_manifest_defaults
from serving.manifest import ManifestError

DESCRIPTION = (
    "Serve /v1/chat/completions with propose-and-aggregate. Every flag can also be set as an AFT_<NAME> "
    "environment variable (e.g. AFT_UPSTREAM_URL); flags win. With --model a checkpoint directory holding "
    "aft.json, its recommendations are the defaults.")


def settings_source(prog: str = "aft serve") -> CliSettingsSource[Settings]:
    """The command line of `aft serve`: a flag per Settings field in kebab case, --flag/--no-flag for
    booleans, and --api-key (also --api-keys) repeatable; `.root_parser` is its argparse parser."""
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, allow_abbrev=False)
    return CliSettingsSource(Settings, root_parser=parser, cli_kebab_case=True, cli_implicit_flags=True,
                             cli_shortcuts={"api-keys": "api-key"}, cli_hide_none_type=True, cli_avoid_json=True)


def settings_from_args(argv: Sequence[str], prog: str = "aft serve") -> Settings:
    """Settings from flags over AFT_* variables over defaults (aft.json comes after: with_manifest_defaults).
    A bad flag exits 2 (argparse); a bad value raises pydantic's ValidationError."""
    # An option of BaseSettings' __init__, which the type checker's view of Settings (its fields) lacks.
    options: dict[str, Any] = {"_cli_settings_source": settings_source(prog)(args=list(argv))}
    return Settings(**options)


def serve(settings: Settings) -> int:
    """Run the service until it is stopped; the process's exit code (0: stopped by a signal, drained;
    1: the engine died, so an orchestrator restarts it; 3: it never started)."""
    import uvicorn

    from app.main import create_app
    from app.server import Server

    configure_logging(settings.log_level, settings.log_format)
    log_level = settings.log_level.lower()
    app = create_app(settings, freeze_heap=True)
    # loop/http "auto" already pick uvloop and httptools (uvicorn[standard]); named here so that a
    # missing one fails at start rather than silently costing CPU (bench/README.md: the profile).
    # No logging config of uvicorn's own: its lines reach the root handler in our format. Its access
    # log is off: the app writes one line per request of its own, with the request id and what the
    # pipeline did (app/access_log.py). The app drains itself (--shutdown-timeout) before the server
    # stops: uvicorn's own grace period only covers sending the last bytes.
    server = Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level=log_level,
                                   log_config=None, loop="uvloop", http="httptools", access_log=False,
                                   timeout_keep_alive=settings.keep_alive_timeout, timeout_graceful_shutdown=10),
                    app.state.lifecycle)
    server.run()
    if not server.started:
        return 3
    exit_code: int = app.state.lifecycle.exit_code
    return exit_code


def main(argv: Sequence[str] | None = None, *, prog: str = "aft serve") -> int:
    try:
        settings = settings_from_args(sys.argv[1:] if argv is None else argv, prog)
        configure_logging(settings.log_level, settings.log_format)  # before the manifest, whose defaults are logged
        settings = with_manifest_defaults(settings)
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"])
            print(f"{prog}: {where + ': ' if where else ''}{error['msg']}", file=sys.stderr)
        return 2
    except ManifestError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    return serve(settings)
