"""One soak request and its outcome: answered, a clean error, refused, lost, hung or unclean.

Each request goes out on a connection of its own. A refused connection then means the service
was not listening, and any other end without an answer is the service's doing; on a reused
connection, a request sent as the server closes it while idle is a race the client must handle
(issue 11, point 2, from the client's side), which a soak of the service should not count.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from bench.shape import completion_problem, json_error_problem, judge_stream

Kind = Literal["answered", "clean_error", "refused", "lost", "hung", "unclean"]
SHAPES = ((1, 0), (3, 1), (5, 2))
"""(proposals, rounds) the clients pick from."""


@dataclass
class Outcome:
    kind: Kind
    stream: bool
    started: float
    """Seconds from the start of the soak."""
    elapsed: float
    status: int | None = None
    detail: str = ""
    """Clean errors: status, type and code; the rest: what happened."""
    service: str = ""
    """The service's state when the request was sent and when it ended (`up`, `stopping`, `down`, ...)."""
    upstream: str = ""
    """The upstream's, likewise (`up`, `down`)."""


def chat_request(rng: random.Random, number: int) -> dict[str, Any]:
    """A small chat request: a random pipeline shape, streamed half the time."""
    proposals, rounds = rng.choice(SHAPES)
    body: dict[str, Any] = {"model": "aft", "messages": [{"role": "user", "content": f"soak request {number}"}],
                            "max_tokens": 16, "stream": rng.random() < 0.5,
                            "aft": {"proposals": proposals, "rounds": rounds, "proposal_max_tokens": 16}}
    if body["stream"] and rng.random() < 0.5:
        body["stream_options"] = {"include_usage": True}
    return body


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and what it was raised from, exception groups opened (anyio's "All connection attempts
    failed" is raised from a group of each attempt's error)."""
    found: list[BaseException] = []
    pending = [exc]
    while pending and len(found) < 20:
        seen = pending.pop()
        found.append(seen)
        if isinstance(seen, BaseExceptionGroup):
            pending.extend(seen.exceptions)
        if (seen.__cause__ or seen.__context__) is not None:
            pending.append(seen.__cause__ or seen.__context__)  # type: ignore[arg-type]
    return found


def _refused(exc: BaseException) -> bool:
    return any(isinstance(e, ConnectionRefusedError) for e in _causes(exc))


def _describe(exc: BaseException) -> str:
    return " <- ".join(f"{type(e).__name__}: {e}".rstrip(": ") for e in _causes(exc)[:4])


def _judge(status: int, stream: bool, body: bytes) -> tuple[Kind, str]:
    if status >= 400:
        problem = json_error_problem(body)
        if problem is not None:
            return "unclean", f"{status}: {problem}"
        error = httpx.Response(status, content=body).json()["error"]
        return "clean_error", f"{status} {error['type']} {error['code']}"
    if status != 200:
        return "unclean", f"status {status}: {body[:200]!r}"
    if not stream:
        problem = completion_problem(body)
        return ("unclean", problem) if problem else ("answered", "")
    verdict, problem = judge_stream(body.decode(errors="replace"))
    if verdict == "answer":
        return "answered", ""
    if verdict == "error":
        return "clean_error", "200 stream error event"
    problem = problem or ""
    # A stream that just ends leaves the client without an answer or an error: lost.
    return "lost" if problem.startswith("the stream does not end") else "unclean", problem


async def send(client: httpx.AsyncClient, url: str, body: dict[str, Any], timeout: float,
               started: float) -> Outcome:
    """POST `body`; the outcome within `timeout` seconds (hung past it). `service` is left to the caller."""
    stream = bool(body.get("stream"))
    start = time.monotonic()
    status: int | None = None
    received = bytearray()

    def outcome(kind: Kind, detail: str) -> Outcome:
        return Outcome(kind, stream, started, round(time.monotonic() - start, 3), status, detail)

    try:
        async with asyncio.timeout(timeout):
            async with client.stream("POST", url, json=body) as response:
                status = response.status_code
                async for data in response.aiter_bytes():
                    received += data
    except TimeoutError:
        return outcome("hung", f"no end within {timeout:.0f} s ({len(received)} bytes received)")
    except httpx.TransportError as exc:
        if status is None and _refused(exc):
            return outcome("refused", "connection refused")
        if status is not None:
            # The connection ended mid-body; what came may still be a whole answer or error (a stream
            # whose [DONE] arrived before the connection's end).
            kind, detail = _judge(status, stream, bytes(received))
            if kind in ("answered", "clean_error"):
                return outcome(kind, detail)
        return outcome("lost", f"{_describe(exc)} ({len(received)} bytes received)")
    return outcome(*_judge(status, stream, bytes(received)))
