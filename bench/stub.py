"""A stub OpenAI-compatible upstream for benchmarks: fixed timing, no model, very little CPU.

It answers POST /v1/chat/completions like vLLM would, with `n` choices and `stream`
honoured, on a schedule set by three numbers: the time to first token, the time per
output token and the output length (capped by the request's max_tokens). Token i of
a response leaves at start + ttft + i * tpot; a non-streamed response leaves when its
last token would. Every streamed token's text is " t<microseconds>", the CLOCK_MONOTONIC
time it was sent, so a client behind a gateway can tell how long the gateway held it.

It counts requests, open connections (and their peak) and cancelled responses (the
client closed the connection before the response ended): GET /stats, POST /stats/reset.
GET /trace returns (and forgets) the CLOCK_MONOTONIC microseconds at which each recent chat
request arrived and its response left, so bench/trace.py can place a gateway's hops.
GET /v1/models and GET /health answer too. With --context, POST /tokenize counts a chat
prompt as vLLM's does (a byte-level stand-in: a token per four bytes of each message's content,
four per message) and /v1/models declares that context, so the service plans a context budget
and counts its aggregation prompts. It listens on 127.0.0.1 only and stops by itself after
--lifetime seconds.

Faults, for soak tests (bench/soak.py), all off by default: every k-th chat request can be
answered with a 5xx error, dropped (connection closed before any byte of the response), cut
(closed halfway through it), slowed, or followed by a close of its keep-alive connection
(a connection that looks reusable and is not). GET /stats counts the faults injected.

Why not FastAPI: the stub shares two cores with the service under test, so it is a
raw asyncio protocol that writes pre-rendered bytes from timer callbacks (no task per
request, no JSON encoding per token); it must cost far less than what it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
            500: b"Internal Server Error", 502: b"Bad Gateway", 503: b"Service Unavailable"}
_WORDS = b"the answer is a draft that the aggregator reads and improves on".split()


@dataclass
class Timing:
    ttft: float = 0.010
    """Seconds from request to the first token."""
    tpot: float = 0.001
    """Seconds between two tokens."""
    tokens: int = 32
    """Output tokens per choice (fewer if the request's max_tokens says so)."""


@dataclass
class Faults:
    """Every k-th chat request (counted from the start or the last /stats/reset) misbehaves; 0 is off.
    Where several apply to one request, the first in this order wins."""

    error_every: int = 0
    """Answered at once with a 5xx OpenAI error body (500, 502, 503 in turn); the connection stays open."""
    drop_every: int = 0
    """The connection closed as the request arrives: no byte of the response."""
    cut_every: int = 0
    """The connection closed halfway through the response (streamed or not)."""
    slow_every: int = 0
    """The whole schedule of the response starts slow_ms late."""
    slow_ms: float = 1000.0
    close_every: int = 0
    """The connection closed right after a complete response that did not announce it (no
    `connection: close`): the next request sent on it finds it gone."""

    def __bool__(self) -> bool:
        return any((self.error_every, self.drop_every, self.cut_every, self.slow_every, self.close_every))

    def pick(self, request: int) -> str | None:
        for name in ("error", "drop", "cut", "slow", "close"):
            every: int = getattr(self, f"{name}_every")
            if every and request % every == 0:
                return name
        return None


@dataclass
class Stats:
    requests: int = 0
    chat_requests: int = 0
    streams: int = 0
    open_connections: int = 0
    peak_open_connections: int = 0
    connections: int = 0
    cancelled: int = 0
    """Responses whose client closed the connection before the last byte."""
    completed: int = 0
    tokenize_requests: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    """Faults injected, by kind (Faults.pick's names)."""


def _now_us() -> int:
    return time.monotonic_ns() // 1000


def _head(status: int, content_type: bytes, length: int | None) -> bytes:
    framing = b"transfer-encoding: chunked\r\n" if length is None else b"content-length: %d\r\n" % length
    return (b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\n%sconnection: keep-alive\r\n\r\n"
            % (status, _REASONS.get(status, b"OK"), content_type, framing))


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class _Response:
    """One chat completion being produced: timer callbacks write its tokens."""

    __slots__ = ("body", "close_after", "conn", "cut_at", "handle", "loop", "n", "next_token", "prefixes", "start",
                 "timing", "tokens")

    def __init__(self, conn: StubProtocol, body: dict[str, Any], timing: Timing) -> None:
        self.conn = conn
        self.loop = conn.loop
        self.timing = timing
        self.n = int(body.get("n") or 1)
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        self.tokens = max(1, min(timing.tokens, int(max_tokens))) if max_tokens else timing.tokens
        self.start = self.loop.time()
        self.next_token = 0
        self.handle: asyncio.TimerHandle | None = None
        self.body = body
        self.cut_at: int | None = None
        """Faults: the token at which the connection is closed instead."""
        self.close_after = False
        """Faults: close the connection once the response is complete."""

    def at(self, token: int) -> float:
        return self.start + self.timing.ttft + token * self.timing.tpot

    # Non-streamed: one timer, one write.
    def schedule_whole(self) -> None:
        self.handle = self.loop.call_at(self.at(self.tokens - 1), self.send_whole)

    def send_whole(self) -> None:
        text = b" ".join(_WORDS[i % len(_WORDS)] for i in range(self.tokens)).decode()
        payload = json.dumps({
            "id": "chatcmpl-stub", "object": "chat.completion", "created": int(time.time()), "model": "stub",
            "choices": [{"index": i, "message": {"role": "assistant", "content": text},
                         "finish_reason": "length" if self.tokens < self.timing.tokens else "stop"}
                        for i in range(self.n)],
            "usage": self._usage()}).encode()
        self.handle = None
        if self.cut_at is not None:
            self.conn.cut(_head(200, b"application/json", len(payload)) + payload[:len(payload) // 2])
            return
        self.conn.finish(_head(200, b"application/json", len(payload)) + payload, close=self.close_after)

    def _usage(self) -> dict[str, int]:
        prompt = sum(len(str(m.get("content", ""))) for m in self.body.get("messages", [])) // 4 + 1
        return {"prompt_tokens": prompt, "completion_tokens": self.tokens * self.n,
                "total_tokens": prompt + self.tokens * self.n}

    # Streamed: a timer per token; the chunk bytes around the stamp are rendered once.
    def start_stream(self) -> None:
        self.prefixes = [b'data: {"id":"chatcmpl-stub","object":"chat.completion.chunk","created":%d,'
                         b'"model":"stub","choices":[{"index":%d,"delta":{' % (int(time.time()), i)
                         for i in range(self.n)]
        first = b"".join(p + b'"role":"assistant","content":""},"finish_reason":null}]}\n\n' for p in self.prefixes)
        self.conn.transport.write(_head(200, b"text/event-stream", None) + _chunk(first))
        self.handle = self.loop.call_at(self.at(0), self.send_token)

    def send_token(self) -> None:
        if self.next_token == self.cut_at:
            self.handle = None
            self.conn.cut(b"")
            return
        stamp = b'"content":" t%d"},"finish_reason":null}]}\n\n' % _now_us()
        self.conn.transport.write(_chunk(b"".join(p + stamp for p in self.prefixes)))
        self.next_token += 1
        if self.next_token < self.tokens:
            self.handle = self.loop.call_at(self.at(self.next_token), self.send_token)
            return
        reason = b"length" if self.tokens < self.timing.tokens else b"stop"
        last = b"".join(p + b'},"finish_reason":"%s"}]}\n\n' % reason for p in self.prefixes)
        usage = (b'data: {"id":"chatcmpl-stub","object":"chat.completion.chunk","model":"stub","choices":[],'
                 b'"usage":%s}\n\ndata: [DONE]\n\n' % json.dumps(self._usage()).encode())
        self.handle = None
        self.conn.finish(_chunk(last + usage) + b"0\r\n\r\n", close=self.close_after)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


class StubProtocol(asyncio.Protocol):
    """One client connection: HTTP/1.1 keep-alive, Content-Length request bodies, no pipelining needed."""

    def __init__(self, server: StubServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.buffer = bytearray()
        self.response: _Response | None = None
        self.transport: asyncio.Transport = None  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        stats = self.server.stats
        stats.connections += 1
        stats.open_connections += 1
        stats.peak_open_connections = max(stats.peak_open_connections, stats.open_connections)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.stats.open_connections -= 1
        if self.response is not None:
            self.response.cancel()
            self.response = None
            self.server.stats.cancelled += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._next()

    def _next(self) -> None:
        while self.response is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            method, target, _ = head[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
            length = int(headers.get("content-length", "0"))
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4:end + 4 + length])
            del self.buffer[:end + 4 + length]
            self._handle(method, target.split("?", 1)[0], body)

    def _reply(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.transport.write(_head(status, b"application/json", len(data)) + data)

    def _inject(self, fault: str) -> bool:
        """Faults that replace the response; True when the request is answered (or dropped) here."""
        stats = self.server.stats
        stats.faults[fault] = stats.faults.get(fault, 0) + 1
        if fault == "error":
            status = (500, 502, 503)[stats.faults[fault] % 3]
            self._reply(status, {"error": {"message": f"stub: injected {status}", "type": "server_error",
                                           "param": None, "code": None}})
            return True
        if fault == "drop":
            self._close()
            return True
        return False

    def _prepare(self, fault: str, response: _Response) -> None:
        """Faults that change how the response is produced."""
        if fault == "cut":
            response.cut_at = response.tokens // 2
        elif fault == "slow":
            response.start += self.server.faults.slow_ms / 1000
        elif fault == "close":
            response.close_after = True

    def finish(self, data: bytes, close: bool = False) -> None:
        self.transport.write(data)
        self.server.trace.append(("out", _now_us()))
        self.response = None
        self.server.stats.completed += 1
        if close:
            self._close()
            return
        self._next()

    def cut(self, data: bytes) -> None:
        """Faults: write `data` (part of a response), then close the connection mid-response."""
        self.transport.write(data)
        self.response = None  # not a client's cancellation
        self._close()

    def _close(self) -> None:
        self.buffer.clear()  # requests pipelined behind this one are lost with the connection
        self.transport.close()

    def _handle(self, method: str, path: str, body: bytes) -> None:
        server = self.server
        server.stats.requests += 1
        if path == "/v1/chat/completions" and method == "POST":
            server.trace.append(("in", _now_us()))
            server.stats.chat_requests += 1
            request = json.loads(body)
            fault = server.faults.pick(server.stats.chat_requests) if server.faults else None
            if fault is not None and self._inject(fault):
                return
            self.response = _Response(self, request, server.timing)
            if fault is not None:
                self._prepare(fault, self.response)
            if request.get("stream"):
                server.stats.streams += 1
                self.response.start_stream()
            else:
                self.response.schedule_whole()
        elif path == "/tokenize" and method == "POST" and server.context:
            server.stats.tokenize_requests += 1
            messages = json.loads(body)["messages"]
            count = sum(-(-len(m["content"].encode()) // 4) + 4 for m in messages)
            self._reply(200, {"count": count, "max_model_len": server.context, "tokens": []})
        elif path == "/v1/models":
            model: dict[str, Any] = {"id": "stub", "object": "model", "owned_by": "bench"}
            if server.context:
                model["max_model_len"] = server.context
            self._reply(200, {"object": "list", "data": [model]})
        elif path == "/health":
            self._reply(200, {"status": "ok"})
        elif path == "/stats" and method == "GET":
            self._reply(200, {**asdict(server.stats), "timing": asdict(server.timing)})
        elif path == "/trace" and method == "GET":
            self._reply(200, list(server.trace))
            server.trace.clear()
        elif path == "/stats/reset" and method == "POST":
            server.reset()
            self._reply(200, {"status": "reset"})
        elif path == "/timing" and method == "POST":
            for key, value in json.loads(body or b"{}").items():
                setattr(server.timing, key, type(getattr(server.timing, key))(value))
            self._reply(200, asdict(server.timing))
        else:
            self._reply(404, {"error": {"message": f"no route {method} {path}", "type": "not_found_error",
                                        "param": None, "code": None}})


class StubServer:
    def __init__(self, timing: Timing, faults: Faults | None = None, context: int = 0) -> None:
        self.timing = timing
        self.context = context
        """The model's context length that /tokenize reports; 0: no /tokenize (404)."""
        self.faults = faults or Faults()
        self.stats = Stats()
        self.trace: collections.deque[tuple[str, int]] = collections.deque(maxlen=10_000)

    def reset(self) -> None:
        open_now = self.stats.open_connections
        self.stats = Stats(open_connections=open_now, peak_open_connections=open_now)

    async def serve(self, port: int, lifetime: float) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: StubProtocol(self), "127.0.0.1", port, backlog=4096)
        async with server:
            await asyncio.sleep(lifetime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ttft-ms", type=float, default=10.0, help="time to first token (ms)")
    parser.add_argument("--tpot-ms", type=float, default=1.0, help="time per output token (ms)")
    parser.add_argument("--tokens", type=int, default=32, help="output tokens per choice")
    parser.add_argument("--lifetime", type=float, default=1800.0, help="seconds after which the stub exits")
    parser.add_argument("--context", type=int, default=0,
                        help="serve POST /tokenize for a model of this context length (0: no /tokenize)")
    faults = parser.add_argument_group("faults", "every K-th chat request misbehaves (0: never)")
    faults.add_argument("--error-every", type=int, default=0, metavar="K", help="answer with a 5xx error")
    faults.add_argument("--drop-every", type=int, default=0, metavar="K", help="close the connection, no response")
    faults.add_argument("--cut-every", type=int, default=0, metavar="K", help="close the connection mid-response")
    faults.add_argument("--slow-every", type=int, default=0, metavar="K", help="start the response --slow-ms late")
    faults.add_argument("--slow-ms", type=float, default=1000.0, help="the delay of a slow response (ms)")
    faults.add_argument("--close-every", type=int, default=0, metavar="K",
                        help="close the keep-alive connection after the response, unannounced")
    args = parser.parse_args()
    timing = Timing(args.ttft_ms / 1000, args.tpot_ms / 1000, args.tokens)
    fault_plan = Faults(args.error_every, args.drop_every, args.cut_every, args.slow_every, args.slow_ms,
                        args.close_every)
    try:
        import uvloop
        run = uvloop.run
    except ImportError:
        run = asyncio.run  # type: ignore[assignment]
    run(StubServer(timing, fault_plan, args.context).serve(args.port, args.lifetime))


if __name__ == "__main__":
    main()
