"""OpenAIBackend against scripted upstreams (httpx.MockTransport; loopback sockets for real timeouts
and for the lean HTTP/1.1 client that plain-HTTP upstreams get)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from serving.backends.base import Sampling, StreamDelta, Usage
from serving.backends.http1 import HTTP1Transport
from serving.backends.openai import OpenAIBackend, Upstream
from serving.errors import (
    ContextLengthExceeded,
    InvalidRequest,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from serving.format import Message
from tests.scripted_http import serving

URL = "http://up.test/v1"
KEY = "sk-secret-123"
MESSAGES: list[Message] = [{"role": "system", "content": "\n"}, {"role": "user", "content": "2+2?"}]
SAMPLING = Sampling(temperature=0.7, top_p=0.95)
Handler = Callable[[httpx.Request], Any]
Make = Callable[..., Awaitable[OpenAIBackend]]


def completion(*texts: str, usage: dict[str, int] | None = None, reason: str = "stop") -> dict[str, Any]:
    choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": reason}
               for i, t in enumerate(texts)]
    return {"choices": choices[::-1]} | ({"usage": usage} if usage else {})  # out of order on purpose


def sse(*events: dict[str, Any] | str) -> list[bytes]:
    return [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n".encode() for e in events]


def chunk(content: str | None = None, reason: str | None = None) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": reason}]}


class Chunks(httpx.AsyncByteStream):
    """A response body sent piece by piece; `gate` holds back every piece after the first."""

    def __init__(self, parts: list[bytes], gate: asyncio.Event | None = None) -> None:
        self.parts, self.gate, self.closed = parts, gate, False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i, part in enumerate(self.parts):
            if i and self.gate is not None:
                await self.gate.wait()
            yield part

    async def aclose(self) -> None:
        self.closed = True


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    backends: list[OpenAIBackend] = []

    async def build(handler: Handler, proposer: Upstream | None = None, aggregator: Upstream | None = None,
                    **kwargs: Any) -> OpenAIBackend:
        backend = OpenAIBackend(proposer or Upstream(URL, "m", KEY), aggregator,
                                transport=httpx.MockTransport(handler), **kwargs)
        await backend.start()
        backends.append(backend)
        return backend

    yield build
    for backend in backends:
        await backend.close()


@contextlib.asynccontextmanager
async def loopback(handler: Handler) -> AsyncIterator[str]:
    """An HTTP/1.1 server on loopback that answers with `handler`, as MockTransport would; yields its base
    URL. A backend pointed at it talks through the lean client (serving/backends/http1.py)."""
    async def reply(raw: bytes, writer: asyncio.StreamWriter) -> None:
        head, _, body = raw.partition(b"\r\n\r\n")
        request_line, *lines = head.decode().split("\r\n")
        method, target, _ = request_line.split(" ")
        headers = [tuple(line.split(": ", 1)) for line in lines]
        response = handler(httpx.Request(method, f"http://127.0.0.1:{server.port}{target}", headers=headers,
                                         content=body))
        content = await response.aread()
        writer.write(b"HTTP/1.1 %d %s\r\ncontent-length: %d\r\n\r\n%s" % (
            response.status_code, response.reason_phrase.encode(), len(content), content))

    async with serving(reply) as server:
        yield f"http://127.0.0.1:{server.port}/v1"


def recording(reply: Callable[[httpx.Request], httpx.Response]) -> tuple[list[httpx.Request], Handler]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return reply(request)
    return seen, handler


async def test_generate_sends_one_request_with_sampling_fields(make: Make) -> None:
    seen, handler = recording(lambda _: httpx.Response(200, json=completion("a", "b", "c")))
    backend = await make(handler)
    await backend.generate("proposer", MESSAGES, SAMPLING, n=3)
    await backend.generate("proposer", MESSAGES, Sampling(0.0, 1.0, max_tokens=7, stop=("x", "y"), seed=5,
                                                          presence_penalty=0.5, frequency_penalty=-0.5), n=3)
    plain, full = (json.loads(r.content) for r in seen)
    assert plain == {"model": "m", "messages": MESSAGES, "n": 3, "temperature": 0.7, "top_p": 0.95}
    assert full == {"model": "m", "messages": MESSAGES, "n": 3, "temperature": 0.0, "top_p": 1.0, "max_tokens": 7,
                    "stop": ["x", "y"], "seed": 5, "presence_penalty": 0.5, "frequency_penalty": -0.5}
    assert [str(r.url) for r in seen] == [f"{URL}/chat/completions"] * 2
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"


async def test_generate_parses_choices_in_index_order_and_usage(make: Make) -> None:
    body = completion("a", "b", "c", usage={"prompt_tokens": 9, "completion_tokens": 15}, reason="length")
    backend = await make(lambda _: httpx.Response(200, json=body))
    generation = await backend.generate("proposer", MESSAGES, SAMPLING, n=3)
    assert [(c.text, c.finish_reason) for c in generation.completions] == [("a", "length"), ("b", "length"),
                                                                           ("c", "length")]
    assert generation.usage == Usage(9, 15, requests=1)


async def test_missing_usage_counts_the_request_with_zero_tokens(make: Make) -> None:
    backend = await make(lambda _: httpx.Response(200, json=completion("a")))
    assert (await backend.generate("proposer", MESSAGES, SAMPLING, n=1)).usage == Usage(0, 0, 1)


@pytest.mark.parametrize("body", [completion("a"), {"choices": "?"}, "not json"])
async def test_unusable_answers_raise(make: Make, body: Any) -> None:
    backend = await make(lambda _: httpx.Response(200, **({"text": body} if isinstance(body, str) else
                                                          {"json": body})))
    with pytest.raises(UpstreamUnavailable, match=URL):
        await backend.generate("proposer", MESSAGES, SAMPLING, n=2)


async def test_roles_go_to_their_own_upstream_model_and_key(make: Make) -> None:
    seen, handler = recording(lambda _: httpx.Response(200, json=completion("a")))
    backend = await make(handler, Upstream("http://p.test/v1/", "pm", "kp"), Upstream("http://a.test/v1", "am"))
    await backend.generate("proposer", MESSAGES, SAMPLING, n=1)
    await backend.generate("aggregator", MESSAGES, SAMPLING, n=1)
    assert [str(r.url) for r in seen] == ["http://p.test/v1/chat/completions", "http://a.test/v1/chat/completions"]
    assert [json.loads(r.content)["model"] for r in seen] == ["pm", "am"]
    assert seen[0].headers["authorization"] == "Bearer kp" and "authorization" not in seen[1].headers


async def test_model_is_discovered_once_per_upstream(make: Make) -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": "first"}, {"id": "second"}]})
        return httpx.Response(200, json=completion("a"))
    seen, handler = recording(reply)
    backend = await make(handler, Upstream(URL))
    await backend.generate("aggregator", MESSAGES, SAMPLING, n=1)
    assert [r.url.path for r in seen] == ["/v1/models", "/v1/chat/completions"]
    assert json.loads(seen[1].content)["model"] == "first"


@pytest.mark.parametrize("reply", [httpx.Response(200, json={"data": []}), httpx.Response(500, text="boom"),
                                   httpx.ConnectError("refused")])
async def test_failed_discovery_is_unavailable_until_the_upstream_answers(
        make: Make, reply: httpx.Response | Exception) -> None:
    up = False

    def handler(request: httpx.Request) -> httpx.Response:
        if up:
            return httpx.Response(200, json={"data": [{"id": "late"}]} if request.url.path.endswith("/models")
                                  else completion("a"))
        if isinstance(reply, Exception):
            raise reply
        return reply
    backend = await make(handler, Upstream(URL))  # the service starts before its upstream
    for call in (backend.check_health(), backend.generate("proposer", MESSAGES, SAMPLING, n=1)):
        with pytest.raises(UpstreamUnavailable, match=f"could not discover the model served at {URL}"):
            await call
    up = True
    await backend.check_health()
    assert (await backend.generate("aggregator", MESSAGES, SAMPLING, n=1)).completions[0].text == "a"


def context_refusal(request: httpx.Request) -> httpx.Response | None:
    """vLLM's 400 for a 40-token prompt + max_tokens over a 2048-token context; None when the request fits."""
    if json.loads(request.content).get("max_tokens", 0) <= 2048 - 40:
        return None
    return httpx.Response(400, json={"error": {
        "message": "This model's maximum context length is 2048 tokens. However, you requested 4096 output tokens "
                   "and your prompt contains 40 input tokens.", "param": "max_tokens"}})


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_max_tokens_over_the_context_is_a_cap_not_a_refusal(make: Make, streamed: bool) -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        if (refusal := context_refusal(request)) is not None:
            return refusal
        if streamed:
            return httpx.Response(200, stream=Chunks(sse(chunk("ok", reason="stop"), "[DONE]")))
        return httpx.Response(200, json=completion("ok"))
    seen, handler = recording(reply)
    backend = await make(handler)
    capped = Sampling(0.7, 1.0, max_tokens=4096)
    if streamed:
        assert [d.text async for d in backend.stream("proposer", MESSAGES, capped)] == ["ok", ""]
    else:
        assert (await backend.generate("proposer", MESSAGES, capped, n=1)).completions[0].text == "ok"
    assert [json.loads(r.content).get("max_tokens") for r in seen] == [4096, None]


async def test_a_prompt_over_the_context_is_still_refused(make: Make) -> None:
    refusal = {"error": {"message": "This model's maximum context length is 2048 tokens.", "param": "messages"}}
    seen, handler = recording(lambda _: httpx.Response(400, json=refusal))
    backend = await make(handler)
    with pytest.raises(ContextLengthExceeded):
        await backend.generate("proposer", MESSAGES, SAMPLING, n=1)  # no max_tokens: nothing to drop
    with pytest.raises(ContextLengthExceeded):
        await backend.generate("proposer", MESSAGES, Sampling(0.7, 1.0, max_tokens=9), n=1)
    assert len(seen) == 3  # one try without max_tokens, two with it


async def test_a_discovered_context_leaves_out_a_max_tokens_it_cannot_hold(make: Make) -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": "m", "max_model_len": 2048}]})
        return context_refusal(request) or httpx.Response(200, json=completion("a"))
    seen, handler = recording(reply)
    backend = await make(handler, Upstream(URL))
    await backend.generate("proposer", MESSAGES, Sampling(0.7, 1.0, max_tokens=4096), n=1)
    await backend.generate("proposer", MESSAGES, Sampling(0.7, 1.0, max_tokens=100), n=1)
    assert [json.loads(r.content).get("max_tokens") for r in seen[1:]] == [None, 100]  # no refused round trip


async def test_stream_yields_deltas_then_finish_and_usage(make: Make) -> None:
    events = sse({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}, chunk("Hel"),
                 chunk("lo"), chunk(" you", reason="length"),
                 {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 3}}, "[DONE]")
    seen, handler = recording(lambda _: httpx.Response(200, stream=Chunks([b": keep-alive\n\n", *events])))
    backend = await make(handler)
    deltas = [d async for d in backend.stream("proposer", MESSAGES, SAMPLING)]
    assert deltas == [StreamDelta("Hel"), StreamDelta("lo"), StreamDelta(" you"),
                      StreamDelta("", finish_reason="length", usage=Usage(4, 3, 1))]
    body = json.loads(seen[0].content)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True} and body["n"] == 1


async def test_deltas_of_one_network_read_go_on_as_one(make: Make) -> None:
    # Under load several tokens arrive in one read: one delta for them (less work everywhere above).
    events = b"".join(sse(chunk("a"), chunk("b"))) + b"data: " + json.dumps(chunk("c")).encode() + b"\r\n\r\n"
    parts = [events, *sse(chunk("d", "stop")), b"data: [DONE]"]  # the last line without its line end
    backend = await make(lambda _: httpx.Response(200, stream=Chunks(parts)))
    deltas = [d async for d in backend.stream("proposer", MESSAGES, SAMPLING)]
    assert deltas == [StreamDelta("abc"), StreamDelta("d"), StreamDelta("", "stop", Usage(0, 0, 1))]


async def test_stream_passes_each_delta_on_before_the_next_arrives(make: Make) -> None:
    gate = asyncio.Event()
    body = Chunks(sse(chunk("first"), chunk("second", "stop"), "[DONE]"), gate)
    backend = await make(lambda _: httpx.Response(200, stream=body))
    deltas = backend.stream("proposer", MESSAGES, SAMPLING)
    assert await asyncio.wait_for(anext(deltas), 5) == StreamDelta("first")
    gate.set()
    assert [d async for d in deltas] == [StreamDelta("second"), StreamDelta("", "stop", Usage(0, 0, 1))]


async def test_closing_or_cancelling_a_stream_closes_the_upstream_response(make: Make) -> None:
    # A closed response closes its connection, which is what makes vLLM abort the request.
    bodies: list[Chunks] = []

    def handler(_: httpx.Request) -> httpx.Response:
        bodies.append(Chunks(sse(chunk("a"), chunk("b"), "[DONE]"), asyncio.Event()))
        return httpx.Response(200, stream=bodies[-1])
    backend = await make(handler)
    deltas = backend.stream("proposer", MESSAGES, SAMPLING)
    assert await anext(deltas) == StreamDelta("a")
    await deltas.aclose()

    async def consume() -> None:
        async for _ in backend.stream("proposer", MESSAGES, SAMPLING):
            pass
    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(bodies) == 2 and all(body.closed for body in bodies)


async def test_error_event_mid_stream_raises(make: Make) -> None:
    events = sse(chunk("a"), {"error": {"message": "engine died", "type": "InternalServerError", "code": 500}},
                 "[DONE]")
    backend = await make(lambda _: httpx.Response(200, stream=Chunks(events)))
    deltas = backend.stream("proposer", MESSAGES, SAMPLING)
    assert await anext(deltas) == StreamDelta("a")
    with pytest.raises(UpstreamUnavailable, match="mid-stream: engine died"):
        await anext(deltas)


async def test_stream_cut_short_raises(make: Make) -> None:
    backend = await make(lambda _: httpx.Response(200, stream=Chunks(sse(chunk("a")))))
    with pytest.raises(UpstreamUnavailable, match="before it finished"):
        _ = [d async for d in backend.stream("proposer", MESSAGES, SAMPLING)]


CONTEXT = "This model's maximum context length is 2048 tokens. However, your prompt contains at least 2049"


@pytest.mark.parametrize(("status", "body", "error", "match"), [
    (400, {"error": {"message": "temperature must be non-negative", "param": "temperature"}}, InvalidRequest,
     "^temperature must be non-negative$"),
    (400, {"error": {"message": CONTEXT, "param": "input_tokens"}}, ContextLengthExceeded, "^This model's"),
    (400, {"object": "error", "message": "max_tokens=5000 cannot be greater than max_model_len=2048"},
     ContextLengthExceeded, "max_model_len"),
    (422, "unprocessable thing", InvalidRequest, "^unprocessable thing$"),
    (401, {"error": {"message": f"Incorrect API key provided: {KEY}"}}, UpstreamUnavailable,
     f"{URL} answered 401: Incorrect API key provided: \\*\\*\\*.*misconfigured"),
    (403, {"message": "forbidden"}, UpstreamUnavailable, f"{URL} answered 403: forbidden.*not the client's fault"),
    (404, {"error": {"message": "The model `m` does not exist."}}, UpstreamUnavailable, "answered 404.*misconf"),
    (429, {"error": {"message": "slow down"}}, UpstreamRateLimited, f"{URL} answered 429: slow down"),
    (500, "<html>oops</html>", UpstreamUnavailable, f"{URL} answered 500: <html>oops</html>"),
    (503, b"", UpstreamUnavailable, f"{URL} answered 503: Service Unavailable"),
])
@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize("client", ["mock", "lean"])
async def test_upstream_errors_map_to_domain_errors(make: Make, status: int, body: Any, error: type[Exception],
                                                   match: str, streamed: bool, client: str) -> None:
    kind = "json" if isinstance(body, dict) else "text" if isinstance(body, str) else "content"
    handler: Handler = lambda _: httpx.Response(status, **{kind: body})  # noqa: E731
    async with contextlib.AsyncExitStack() as stack:
        if client == "mock":
            backend = await make(handler)
        else:  # the same answers over a socket, through the lean HTTP/1.1 client
            url = await stack.enter_async_context(loopback(handler))
            match = match.replace(URL, url)
            backend = OpenAIBackend(Upstream(url, "m", KEY))
            await backend.start()
            stack.push_async_callback(backend.close)
            assert isinstance(backend._targets["proposer"].transport, HTTP1Transport)
        with pytest.raises(error, match=match) as caught:
            if streamed:
                _ = [d async for d in backend.stream("proposer", MESSAGES, SAMPLING)]
            else:
                await backend.generate("proposer", MESSAGES, SAMPLING, n=1)
    assert type(caught.value) is error and KEY not in str(caught.value)
    if status == 400 and error is InvalidRequest:
        assert caught.value.param == "temperature"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("exc", "error"), [(httpx.ReadTimeout("slow"), UpstreamTimeout),
                                            (httpx.PoolTimeout("busy"), UpstreamTimeout),
                                            (httpx.ConnectError("refused"), UpstreamUnavailable),
                                            (httpx.RemoteProtocolError("cut"), UpstreamUnavailable)])
async def test_transport_errors_map_to_domain_errors(make: Make, exc: Exception, error: type[Exception]) -> None:
    def handler(_: httpx.Request) -> httpx.Response:
        raise exc
    backend = await make(handler)
    with pytest.raises(error, match=URL):
        await backend.generate("proposer", MESSAGES, SAMPLING, n=1)
    with pytest.raises(error, match=URL):
        _ = [d async for d in backend.stream("proposer", MESSAGES, SAMPLING)]


async def test_real_timeouts_and_refused_connections(unused_port: int) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers
    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        backend = OpenAIBackend(Upstream(f"http://127.0.0.1:{port}/v1", "m"), timeout=0.2)
        await backend.start()
        with pytest.raises(UpstreamTimeout, match=f"127.0.0.1:{port}/v1 timed out"):
            await backend.generate("proposer", MESSAGES, SAMPLING, n=1)
        await backend.close()
    finally:
        server.close()
    backend = OpenAIBackend(Upstream(f"http://127.0.0.1:{unused_port}/v1", "m"))
    await backend.start()
    with pytest.raises(UpstreamUnavailable, match="could not be reached"):
        _ = [d async for d in backend.stream("proposer", MESSAGES, SAMPLING)]
    with pytest.raises(UpstreamUnavailable):
        await backend.check_health()
    await backend.close()


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_health_checks_each_distinct_upstream(make: Make) -> None:
    seen, handler = recording(lambda r: httpx.Response(200 if r.url.host == "p.test" else 503, json={"data": []}))
    backend = await make(handler, Upstream("http://p.test/v1", "pm"), Upstream("http://p.test/v1/", "am"))
    await backend.check_health()
    assert [str(r.url) for r in seen] == ["http://p.test/v1/models"]
    backend = await make(handler, Upstream("http://p.test/v1", "pm"), Upstream("http://a.test/v1", "am"))
    with pytest.raises(UpstreamUnavailable, match=r"http://a\.test/v1 answered 503"):
        await backend.check_health()


class ClosingTransport(httpx.MockTransport):
    closed = 0

    async def aclose(self) -> None:
        self.closed += 1


async def test_lifecycle_starts_once_and_closes_the_transport() -> None:
    transport = ClosingTransport(lambda _: httpx.Response(500))
    backend = OpenAIBackend(Upstream(URL, "m"), transport=transport)
    with pytest.raises(RuntimeError):
        await backend.generate("proposer", MESSAGES, SAMPLING, n=1)
    await backend.start()
    await backend.start()
    await backend.close()
    assert transport.closed == 1
    with pytest.raises(UpstreamUnavailable, match="not started"):
        await backend.check_health()
    with pytest.raises(RuntimeError):
        await backend.generate("proposer", MESSAGES, SAMPLING, n=1)


async def test_plain_http_upstreams_share_the_lean_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    backend = OpenAIBackend(Upstream("http://p.test/v1", "pm"), Upstream("http://a.test/v1", "am"))
    await backend.start()
    assert isinstance(backend._targets["proposer"].transport, HTTP1Transport)
    assert backend._targets["proposer"].transport is backend._targets["aggregator"].transport
    await backend.close()
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.test:3128")
    backend = OpenAIBackend(Upstream("http://p.test/v1", "pm"), Upstream("https://a.test/v1", "am"))
    await backend.start()
    assert not isinstance(backend._targets["proposer"].transport, HTTP1Transport)  # the proxy is honoured
    assert isinstance(backend._targets["aggregator"].transport, httpx.AsyncHTTPTransport)
    await backend.close()


async def test_a_named_role_and_a_discovering_role_on_one_upstream_keep_their_models(make: Make) -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": "first"}, {"id": "named"}]})
        return httpx.Response(200, json=completion("a"))
    seen, handler = recording(reply)
    backend = await make(handler, Upstream(URL, "named"), Upstream(URL))
    await asyncio.gather(*(backend.generate(role, MESSAGES, SAMPLING, n=1)  # type: ignore[arg-type]
                           for role in ("aggregator", "proposer", "aggregator")))
    chats = [json.loads(r.content)["model"] for r in seen if r.url.path.endswith("/chat/completions")]
    assert sorted(chats) == ["first", "first", "named"]
    assert [r.url.path for r in seen].count("/v1/models") == 1
