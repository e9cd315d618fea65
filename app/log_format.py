"""How the service's log lines look: text for people, `--log-format json` for log shippers.

Standard library logging, one handler on the root logger; uvicorn's own loggers propagate to it
(`aft serve` gives uvicorn no logging config of its own), so every line has one format. Each line
carries the id of the request it was written for (serving/request_context.py), `-` outside one.
A JSON line is one object: time, level, logger, message, request_id, and an access line's fields.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import IO, Any, Literal

from serving.request_context import request_id

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


class RequestIdFilter(logging.Filter):
    """Stamps each record with the id of the request being served (on a handler, it sees every logger's)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; an access line's fields (its record's `access.fields()`) at its top level."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        rid = getattr(record, "request_id", "-")
        if rid != "-":
            entry["request_id"] = rid
        access = getattr(record, "access", None)  # an access line's record (app/access_log.py)
        if access is not None:
            entry.update(access.fields())
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def log_handler(log_format: LogFormat, stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing `log_format` lines to `stream` (stderr by default), request ids stamped."""
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    return handler


def configure_logging(level: str, log_format: LogFormat) -> None:
    """The process's logging: every logger's lines through one handler, at `level`."""
    logging.basicConfig(level=level.upper(), handlers=[log_handler(log_format)], force=True)
