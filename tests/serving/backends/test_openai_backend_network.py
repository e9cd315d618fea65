"""OpenAIBackend on the networks it meets: connections the upstream drops, retries, proxies, TLS."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import struct
import subprocess
from pathlib import Path

import httpx
import pytest

from serving.backends.base import Sampling
from serving.backends.openai import OpenAIBackend
from serving.backends.openai_target import Upstream
from serving.errors import InvalidRequest, UpstreamRateLimited, UpstreamTimeout, UpstreamUnavailable
from serving.format import Message
from tests.scripted_http import Handler, Reply, serving
from tests.serving.backends.scripted_upstreams import Upstreams, completion, recording, sse

MESSAGES: list[Message] = [{"role": "user", "content": "2+2?"}]
SAMPLING = Sampling(temperature=0.7, top_p=0.95)


def answer(request: bytes) -> bytes:
    """A whole answer to a chat request: a completion, or a stream of one token when it asked for one."""
    if b'"stream":true' in request:
        body = b"".join(sse({"choices": [{"index": 0, "delta": {"content": "4"}, "finish_reason": "stop"}]},
                            "[DONE]"))
        return b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    body = json.dumps(completion("4")).encode()
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


def one_answer_per_connection(how: str) -> Reply:
    """An upstream that answers the first request on each connection, and drops the connection when a
    second one arrives on it: with a reset, as one whose idle timeout fires just as the request arrives
    (it closes with the request unread), or with a plain close, as one that closes every connection
    after one response."""
    answered: set[int] = set()

    async def reply(request: bytes, writer: asyncio.StreamWriter) -> None:
        if id(writer) not in answered:
            answered.add(id(writer))
            writer.write(answer(request))
            return
        if how == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
    return reply


async def ask(backend: OpenAIBackend, streamed: bool) -> str:
    if streamed:
        return "".join([d.text async for d in backend.stream("proposer", MESSAGES, SAMPLING)])
    return (await backend.generate("proposer", MESSAGES, SAMPLING, n=1)).completions[0].text


@pytest.mark.parametrize("how", ["reset", "close"])
@pytest.mark.parametrize("streamed", [False, True])
async def test_a_request_on_a_connection_the_upstream_dropped_is_sent_again_on_a_fresh_one(
        ups: Upstreams, how: str, streamed: bool) -> None:
    async with serving(one_answer_per_connection(how)) as server:
        backend = await ups.backend(Upstream(server.url + "/v1", "m"))
        assert [await ask(backend, streamed) for _ in range(6)] == ["4"] * 6
    # Every second request went out on a pooled connection that the upstream then dropped.
    assert backend.retried == {"disconnected": 3}


def failing_first(*statuses: int) -> tuple[list[httpx.Request], Handler]:
    """An upstream that answers with `statuses` first, then answers properly."""
    left = list(statuses)

    def reply(request: httpx.Request) -> httpx.Response:
        if left:
            return httpx.Response(left.pop(0), json={"error": {"message": "not now"}})
        if b'"stream":true' in request.content:
            return httpx.Response(200, content=b"".join(sse(
                {"choices": [{"index": 0, "delta": {"content": "4"}, "finish_reason": "stop"}]}, "[DONE]")))
        return httpx.Response(200, json=completion("4"))
    return recording(reply)


@pytest.mark.parametrize("streamed", [False, True])
async def test_502_and_503_are_retried_with_back_off(ups: Upstreams, streamed: bool) -> None:
    seen, handler = failing_first(503, 502)
    backend = await ups.make(handler, retries=2)
    assert await ask(backend, streamed) == "4"
    assert len(seen) == 3 and backend.retried == {"status": 2}


async def test_retries_are_bounded(ups: Upstreams) -> None:
    seen, handler = failing_first(*[503] * 10)
    backend = await ups.make(handler, retries=2)
    with pytest.raises(UpstreamUnavailable, match=r"\(503\)"):
        await ask(backend, streamed=False)
    assert len(seen) == 3 and backend.retried == {"status": 2}


@pytest.mark.parametrize(("status", "error"), [(500, UpstreamUnavailable), (429, UpstreamRateLimited),
                                               (400, InvalidRequest), (404, UpstreamUnavailable)])
async def test_other_failures_are_not_retried(ups: Upstreams, status: int, error: type[Exception]) -> None:
    seen, handler = failing_first(status)
    backend = await ups.make(handler, retries=2)
    with pytest.raises(error):
        await ask(backend, streamed=False)
    assert len(seen) == 1 and backend.retried.total() == 0


async def test_connect_errors_are_retried_with_back_off(ups: Upstreams, unused_port: int) -> None:
    backend = await ups.backend(Upstream(f"http://127.0.0.1:{unused_port}/v1", "m"), retries=2)
    with pytest.raises(UpstreamUnavailable, match="could not be reached"):
        await ask(backend, streamed=True)
    assert backend.retried == {"connect": 2}


async def test_a_timed_out_answer_is_not_sent_again(ups: Upstreams) -> None:
    async def silent(_: bytes, __: asyncio.StreamWriter) -> None:
        pass

    async with serving(silent) as server:
        backend = await ups.backend(Upstream(server.url + "/v1", "m"), timeout=0.2)
        with pytest.raises(UpstreamTimeout):
            await ask(backend, streamed=False)
    assert len(server.requests) == 1 and backend.retried.total() == 0


async def test_http_proxy_and_no_proxy_from_the_environment(ups: Upstreams, monkeypatch: pytest.MonkeyPatch,
                                                            unused_port: int) -> None:
    seen, handler = recording(lambda _: httpx.Response(200, json=completion("via proxy")))
    proxy = (await ups.serve(handler)).removesuffix("/v1")
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "NO_PROXY", "ALL_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy)
    backend = await ups.backend(Upstream("http://upstream.internal:8000/v1", "m"))
    assert await ask(backend, streamed=False) == "via proxy"
    assert str(seen[0].url) == "http://upstream.internal:8000/v1/chat/completions"  # the proxy was asked for it
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    backend = await ups.backend(Upstream(f"http://127.0.0.1:{unused_port}/v1", "m"), retries=0)
    with pytest.raises(UpstreamUnavailable, match="could not be reached"):
        await ask(backend, streamed=False)  # straight to the (closed) port, not through the proxy
    assert len(seen) == 1


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    where = tmp_path_factory.mktemp("tls")
    key, cert = where / "key.pem", where / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(Path(cert), Path(key))
    return context


async def test_https_upstreams_verify_certificates(ups: Upstreams, self_signed: ssl.SSLContext) -> None:
    async def reply(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(answer(request))

    async with serving(reply, ssl=self_signed) as server:
        backend = await ups.backend(Upstream(f"https://127.0.0.1:{server.port}/v1", "m"))
        with pytest.raises(UpstreamUnavailable, match="could not be reached") as caught:
            await ask(backend, streamed=False)
    assert "certificate" in (caught.value.detail or "").lower()
    assert backend.retried.total() == 0  # a refused certificate is refused again


async def test_a_call_waits_for_a_free_connection_no_longer_than_the_timeout(ups: Upstreams) -> None:
    asked = asyncio.Event()

    async def hold(_: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")  # a stream that never goes on
        asked.set()

    async with serving(hold) as server:
        backend = await ups.backend(Upstream(server.url + "/v1", "m"), max_connections=1, timeout=0.3, retries=0)
        held = backend.stream("proposer", MESSAGES, SAMPLING)
        waiting = asyncio.create_task(anext(held))
        await asked.wait()  # the one connection is taken
        with pytest.raises(UpstreamTimeout):
            await asyncio.wait_for(backend.generate("proposer", MESSAGES, SAMPLING, n=1), 5)
        assert server.connections == 1
        with pytest.raises(UpstreamTimeout):
            await waiting
        await held.aclose()


async def test_credentials_in_the_upstream_url_are_sent_as_basic_auth(ups: Upstreams) -> None:
    seen, handler = recording(lambda _: httpx.Response(200, json=completion("4")))
    url = await ups.serve(handler)
    backend = await ups.backend(Upstream(url.replace("http://", "http://user:pw@"), "m"))
    assert (await backend.generate("proposer", MESSAGES, SAMPLING, n=1)).completions[0].text == "4"
    assert seen[0].headers["authorization"] == "Basic dXNlcjpwdw=="  # user:pw
    assert seen[0].headers["host"] == url.removeprefix("http://").removesuffix("/v1")
