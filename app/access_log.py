"""One access log line per finished request, and the request's id for its whole life.

AccessLog, the outermost of the app's own middleware, gives each request its id
(app/request_id.py), sets it where backends and log lines find it (serving/request_context.py),
returns it as `X-Request-ID` on every response, and when the request has ended writes one line
to the `aft.access` logger. A chat or Responses request's line (info level) says what its pipeline reported,
filled in by the chat service and the error handlers through `current()`; other paths' lines (health checks, scrapes:
probes every few seconds would drown the answers) are at debug level. A line holds ids, counts
and times only: never the prompt, the completion or a key.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.metrics import PIPELINE_PATHS
from app.request_id import accepted, new_request_id
from serving.backends.base import Usage
from serving.request_context import request_id

_HEADER = b"x-request-id"

logger = logging.getLogger("aft.access")


@dataclass
class Access:
    """What a request's access line reports. `outcome` is a chat request's end as
    aft_requests_total counts it ("200", an error status, "disconnected"): a stream that failed
    midway has status 200 and the error's status as outcome."""

    request_id: str
    method: str
    path: str
    status: int = 500
    """The status sent; 500 until one is (an app that raised before answering)."""
    seconds: float = 0.0
    outcome: str | None = None
    error: str | None = None
    """The kind of error the request ended with (app/metrics.py error_kind)."""
    stream: bool | None = None
    proposals: int | None = None
    rounds: int | None = None
    n: int | None = None
    usage_by_round: list[Usage] = field(default_factory=list)
    """Tokens and engine requests of each round, summed over the request's answers."""
    seconds_by_round: list[float] = field(default_factory=list)
    """Each round's duration in the slowest of the request's answers."""

    def chat(self, *, stream: bool, proposals: int, rounds: int, n: int) -> None:
        """What a chat request asked for."""
        self.stream, self.proposals, self.rounds, self.n = stream, proposals, rounds, n

    def add_answer(self, usage_by_round: list[Usage], seconds_by_round: list[float]) -> None:
        for round_, usage in enumerate(usage_by_round):
            if round_ == len(self.usage_by_round):
                self.usage_by_round.append(Usage())
            self.usage_by_round[round_].add(usage)
        for round_, seconds in enumerate(seconds_by_round):
            if round_ == len(self.seconds_by_round):
                self.seconds_by_round.append(seconds)
            self.seconds_by_round[round_] = max(self.seconds_by_round[round_], seconds)

    def fields(self) -> dict[str, Any]:
        """The line's fields, as a JSON log line has them."""
        entry: dict[str, Any] = {"method": self.method, "path": self.path, "status": self.status,
                                 "duration_s": round(self.seconds, 4)}
        if self.path not in PIPELINE_PATHS:
            return entry
        entry["outcome"] = self.outcome or str(self.status)
        if self.error:
            entry["error"] = self.error
        if self.stream is not None:
            entry.update(stream=self.stream, proposals=self.proposals, rounds=self.rounds, n=self.n)
        if self.usage_by_round:
            entry["tokens_by_round"] = [{"round": i, "requests": u.requests, "prompt": u.prompt_tokens,
                                         "completion": u.completion_tokens}
                                        for i, u in enumerate(self.usage_by_round)]
            entry["seconds_by_round"] = [round(s, 4) for s in self.seconds_by_round]
        return entry

    def __str__(self) -> str:
        line = f"{self.method} {self.path} {self.status} {self.seconds:.3f}s"
        if self.path not in PIPELINE_PATHS:
            return line
        line += f" outcome={self.outcome or self.status}"
        if self.error:
            line += f" error={self.error}"
        if self.stream is not None:
            line += (f" stream={str(self.stream).lower()} proposals={self.proposals} rounds={self.rounds}"
                     f" n={self.n}")
        if self.usage_by_round:
            line += " tokens=" + ",".join(f"{u.prompt_tokens}/{u.completion_tokens}" for u in self.usage_by_round)
            line += " seconds=" + ",".join(f"{s:.3f}" for s in self.seconds_by_round)
        return line


_current: ContextVar[Access | None] = ContextVar("aft_access", default=None)


def current() -> Access:
    """The access record of the request being served; outside one (a service called without the
    middleware), a record of its own that no line reports."""
    access = _current.get()
    return access if access is not None else Access(request_id.get() or new_request_id(), "", "")


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client_id = next((v for k, v in scope["headers"] if k == _HEADER), None)
        rid = accepted(client_id.decode("latin-1") if client_id is not None else None)
        access = Access(rid, scope["method"], scope["path"])
        # Left set when the request ends: the lines written after it (Starlette's handler of an
        # unexpected error runs outside this middleware) carry the id too. Each request runs in a
        # task of its own, whose context dies with it.
        request_id.set(rid)
        _current.set(access)
        scope.setdefault("state", {})["request_id"] = rid  # for that handler's response header
        header = (_HEADER, rid.encode())
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                access.status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            access.seconds = time.perf_counter() - start
            level = logging.INFO if access.path in PIPELINE_PATHS else logging.DEBUG
            if logger.isEnabledFor(level):
                logger.log(level, "%s", access, extra={"access": access})  # fields() only for JSON
