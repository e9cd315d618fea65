"""The load generator: closed-loop clients on keep-alive connections, bounded in count and time.

Three kinds of client, each one "answer" per call:
- `service_answer`: one chat completion from the AFT service (streamed or not);
- `direct_answer`: the ideal critical path on the stub, rounds + 1 calls made by the
  load generator itself, n = N in each draft layer, the last call streamed or not;
- `optillm_answer`: one chat completion from optillm (its approach runs upstream).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.client import Connection, HTTPError

PROMPT = "Explain in two sentences why the sky is blue, then give one everyday example of the same effect."
_CONTENT = b'"content":"'


@dataclass
class Outcome:
    ok: bool
    latency: float
    """Seconds from sending the request to the last byte of the answer."""
    ttft: float | None = None
    """Streams: seconds to the first non-empty content delta."""
    relay_us: list[int] = field(default_factory=list)
    """Streams from the stub: microseconds from the stub sending each token to its arrival here."""
    completion_tokens: int | None = None
    """Tokens generated for the answer, all rounds (from the response's usage)."""
    final_tokens: int | None = None
    """Tokens of the final answer alone (the AFT service's per-round usage)."""
    error: str | None = None


class SSEReader:
    """Consumes a chat.completion.chunk stream as it arrives, with byte searches rather than JSON."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.buffer = b""
        self.ttft: float | None = None
        self.relay_us: list[int] = []
        self.done = False
        self.error: str | None = None
        self.usage: dict[str, Any] | None = None

    def feed(self, data: bytes) -> None:
        now_us = time.monotonic_ns() // 1000
        events = (self.buffer + data).split(b"\n\n")
        self.buffer = events.pop()
        for event in events:
            if event == b"data: [DONE]":
                self.done = True
                continue
            if b'"error"' in event and self.error is None:
                self.error = event[:300].decode(errors="replace")
            at = event.find(_CONTENT)
            if at >= 0 and event[at + 11:at + 12] != b'"':
                if self.ttft is None:
                    self.ttft = time.perf_counter() - self.start
                if event[at + 11:at + 13] == b" t":
                    end = event.find(b'"', at + 13)
                    stamp = event[at + 13:end]
                    if stamp.isdigit():
                        self.relay_us.append(now_us - int(stamp))
            if b'"usage":{' in event and b'"choices":[]' in event:
                self.usage = json.loads(event[6:])

    def outcome(self, status: int) -> Outcome:
        latency = time.perf_counter() - self.start
        ok = status == 200 and self.done and self.error is None
        error = None if ok else (self.error or f"status {status}, done={self.done}")
        tokens, final = _tokens(self.usage or {})
        return Outcome(ok, latency, self.ttft, self.relay_us, tokens, final, error)


def _tokens(body: dict[str, Any]) -> tuple[int | None, int | None]:
    """(completion tokens of every round, of the final round) from a response or a usage chunk."""
    total = (body.get("usage") or {}).get("completion_tokens")
    try:
        final = body["aft"]["answers"][0]["usage_by_round"][-1]["completion_tokens"]
    except (KeyError, IndexError, TypeError):
        final = total
    return total, final


async def _post(connection: Connection, path: str, payload: dict[str, Any], start: float) -> Outcome:
    body = json.dumps(payload).encode()
    if payload.get("stream"):
        reader = SSEReader(start)
        status, _ = await connection.request("POST", path, body, on_data=reader.feed)
        return reader.outcome(status)
    status, data = await connection.request("POST", path, body)
    latency = time.perf_counter() - start
    ok = status == 200 and b'"choices"' in data
    if not ok:
        return Outcome(False, latency, error=f"status {status}: {data[:300]!r}")
    tokens, final = _tokens(json.loads(data)) if b'"usage"' in data else (None, None)
    return Outcome(True, latency, completion_tokens=tokens, final_tokens=final)


Client = Callable[[Connection], Awaitable[Outcome]]


def service_answer(proposals: int, rounds: int, stream: bool, *, model: str = "aft",
                   max_tokens: int | None = None) -> Client:
    payload: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "stream": stream,
                               "aft": {"proposals": proposals, "rounds": rounds}}
    if stream:
        payload["stream_options"] = {"include_usage": True}
    if max_tokens is not None:
        payload["max_tokens"] = max_tokens
        payload["aft"]["proposal_max_tokens"] = max_tokens

    async def call(connection: Connection) -> Outcome:
        return await _post(connection, "/v1/chat/completions", payload, time.perf_counter())

    return call


def direct_answer(proposals: int, rounds: int, stream: bool) -> Client:
    messages = [{"role": "system", "content": "\n"}, {"role": "user", "content": PROMPT}]
    draft = {"model": "stub", "messages": messages, "n": proposals, "temperature": 0.7, "top_p": 0.95}
    final: dict[str, Any] = {"model": "stub", "messages": messages, "n": 1, "temperature": 0.7, "top_p": 1.0,
                             "stream": stream}
    if stream:
        final["stream_options"] = {"include_usage": True}

    async def call(connection: Connection) -> Outcome:
        start = time.perf_counter()
        for _ in range(rounds):
            layer = await _post(connection, "/v1/chat/completions", draft, start)
            if not layer.ok:
                return layer
        return await _post(connection, "/v1/chat/completions", final, start)

    return call


def optillm_answer(stream: bool = False) -> Client:
    payload = {"model": "stub", "messages": [{"role": "user", "content": PROMPT}], "stream": stream}

    async def call(connection: Connection) -> Outcome:
        return await _post(connection, "/v1/chat/completions", payload, time.perf_counter())

    return call


async def run_load(client: Client, connections: Sequence[Connection], *, requests: int, seconds: float,
                   timeout: float = 120.0) -> tuple[list[Outcome], float]:
    """One closed-loop client per connection, until `requests` were sent or `seconds` passed
    (requests in flight then finish). Returns the outcomes and the wall time."""
    deadline = time.perf_counter() + seconds
    issued = 0
    outcomes: list[Outcome] = []

    async def loop(connection: Connection) -> None:
        nonlocal issued
        while issued < requests and time.perf_counter() < deadline:
            issued += 1
            start = time.perf_counter()
            try:
                outcome = await asyncio.wait_for(client(connection), timeout)
            except (HTTPError, OSError, TimeoutError, ValueError) as exc:
                connection.close()
                outcome = Outcome(False, time.perf_counter() - start, error=repr(exc))
            outcomes.append(outcome)

    start = time.perf_counter()
    await asyncio.gather(*(loop(c) for c in connections))
    return outcomes, time.perf_counter() - start


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))]
