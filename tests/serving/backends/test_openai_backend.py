"""OpenAIBackend against scripted upstreams on loopback (tests/scripted_http.py): the answers a real
upstream gives, through the real client."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
import pytest

from serving.backends.base import Sampling, StreamDelta, ToolCallDelta, Usage
from serving.backends.openai import OpenAIBackend
from serving.backends.openai_target import Upstream
from serving.errors import (
    ContextLengthExceeded,
    InvalidRequest,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from serving.format import Message
from tests.scripted_http import serving
from tests.serving.backends.scripted_upstreams import KEY, Chunks, Make, Upstreams, chunk, completion, recording, sse

MESSAGES: list[Message] = [{"role": "system", "content": "\n"}, {"role": "user", "content": "2+2?"}]
SAMPLING = Sampling(temperature=0.7, top_p=0.95)


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
    assert [r.url.path for r in seen] == ["/v1/chat/completions"] * 2
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
async def test_unusable_answers_raise(ups: Upstreams, body: Any) -> None:
    backend = await ups.make(lambda _: httpx.Response(200, **({"text": body} if isinstance(body, str) else
                                                              {"json": body})))
    with pytest.raises(UpstreamUnavailable) as caught:
        await backend.generate("proposer", MESSAGES, SAMPLING, n=2)
    assert ups.url not in caught.value.message and ups.url in (caught.value.detail or "")


async def test_roles_go_to_their_own_upstream_model_and_key(ups: Upstreams) -> None:
    seen, handler = recording(lambda _: httpx.Response(200, json=completion("a")))
    p, a = await ups.serve(handler), await ups.serve(handler)
    backend = await ups.backend(Upstream(p + "/", "pm", "kp"), Upstream(a, "am"))
    await backend.generate("proposer", MESSAGES, SAMPLING, n=1)
    await backend.generate("aggregator", MESSAGES, SAMPLING, n=1)
    assert [str(r.url) for r in seen] == [f"{p}/chat/completions", f"{a}/chat/completions"]
    assert [json.loads(r.content)["model"] for r in seen] == ["pm", "am"]
    assert seen[0].headers["authorization"] == "Bearer kp" and "authorization" not in seen[1].headers


async def test_model_is_discovered_once_per_upstream(make: Make) -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": "first"}, {"id": "second"}]})
        return httpx.Response(200, json=completion("a"))
    seen, handler = recording(reply)
    backend = await make(handler, model=None)
    await backend.generate("aggregator", MESSAGES, SAMPLING, n=1)
    assert [r.url.path for r in seen] == ["/v1/models", "/v1/chat/completions"]
    assert json.loads(seen[1].content)["model"] == "first"


@pytest.mark.parametrize("reply", [httpx.Response(200, json={"data": []}), httpx.Response(500, text="boom"),
                                   ConnectionError("hung up")])
async def test_failed_discovery_is_unavailable_until_the_upstream_answers(
        ups: Upstreams, reply: httpx.Response | Exception) -> None:
    up = False

    def handler(request: httpx.Request) -> httpx.Response:
        if up:
            return httpx.Response(200, json={"data": [{"id": "late"}]} if request.url.path.endswith("/models")
                                  else completion("a"))
        if isinstance(reply, Exception):
            raise reply
        return reply
    backend = await ups.make(handler, model=None)  # the service starts before its upstream
    for call in (backend.check_health(), backend.generate("proposer", MESSAGES, SAMPLING, n=1)):
        with pytest.raises(UpstreamUnavailable, match="could not discover the upstream's model") as caught:
            await call
        assert ups.url in (caught.value.detail or "")
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
    backend = await make(handler, model=None)
    await backend.generate("proposer", MESSAGES, Sampling(0.7, 1.0, max_tokens=4096), n=1)
    await backend.generate("proposer", MESSAGES, Sampling(0.7, 1.0, max_tokens=100), n=1)
    assert [json.loads(r.content).get("max_tokens") for r in seen[1:]] == [None, 100]  # no refused round trip


async def test_stream_yields_deltas_then_finish_and_usage(make: Make) -> None:
    events = sse({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}, chunk("Hel"),
                 chunk("lo"), chunk(" you", reason="length"),
                 {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 3}}, "[DONE]")
    seen, handler = recording(lambda _: httpx.Response(200, stream=Chunks([b": keep-alive\n\n", *events])))
    backend = await make(handler)
    *pieces, last = [d async for d in backend.stream("proposer", MESSAGES, SAMPLING)]
    assert "".join(p.text for p in pieces) == "Hello you"  # pieces that arrive together go on as one
    assert all(p.text and p.finish_reason is None and p.usage is None for p in pieces)
    assert last == StreamDelta("", finish_reason="length", usage=Usage(4, 3, 1))
    body = json.loads(seen[0].content)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True} and body["n"] == 1


async def test_deltas_of_one_network_read_go_on_as_one(make: Make) -> None:
    # Under load several tokens arrive in one read: one delta for them (less work everywhere above).
    events = b"".join(sse(chunk("a"), chunk("b"))) + b"data: " + json.dumps(chunk("c")).encode() + b"\r\n\r\n"
    parts = [events, *sse(chunk("d", "stop")), b"data: [DONE]"]  # the last line without its line end
    gate = asyncio.Event()
    backend = await make(lambda _: httpx.Response(200, stream=Chunks(parts, gate)))
    deltas = backend.stream("proposer", MESSAGES, SAMPLING)
    assert await anext(deltas) == StreamDelta("abc")
    gate.set()
    assert [d async for d in deltas] == [StreamDelta("d"), StreamDelta("", "stop", Usage(0, 0, 1))]


async def test_stream_passes_each_delta_on_before_the_next_arrives(make: Make) -> None:
    gate = asyncio.Event()
    body = Chunks(sse(chunk("first"), chunk("second", "stop"), "[DONE]"), gate)
    backend = await make(lambda _: httpx.Response(200, stream=body))
    deltas = backend.stream("proposer", MESSAGES, SAMPLING)
    assert await asyncio.wait_for(anext(deltas), 5) == StreamDelta("first")
    gate.set()
    assert [d async for d in deltas] == [StreamDelta("second"), StreamDelta("", "stop", Usage(0, 0, 1))]


async def test_a_calls_pieces_go_on_as_the_upstream_sends_them(make: Make) -> None:
    # They were joined and sent whole with the finish: a client saw nothing of a call until it ended.
    def call(piece: dict[str, Any]) -> dict[str, Any]:
        return {"choices": [{"index": 0, "delta": {"tool_calls": [piece]}, "finish_reason": None}]}

    gate = asyncio.Event()
    first = call({"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}})
    more = [call({"index": 0, "function": {"arguments": piece}}) for piece in ('{"x": ', "1}")]
    parts = [*sse(first), *sse(*more, chunk(reason="tool_calls"), "[DONE]")]
    backend = await make(lambda _: httpx.Response(200, stream=Chunks(parts, gate)))
    deltas = backend.stream("proposer", MESSAGES, SAMPLING)
    named = StreamDelta("", tool_calls=(ToolCallDelta(0, "", "call_1", "f"),))
    assert await asyncio.wait_for(anext(deltas), 5) == named
    gate.set()
    rest = [d async for d in deltas]
    assert [p for d in rest for p in d.tool_calls] == [ToolCallDelta(0, '{"x": '), ToolCallDelta(0, "1}")]
    assert rest[-1] == StreamDelta("", "tool_calls", Usage(0, 0, 1))


@pytest.mark.parametrize("how", ["closed after a delta", "cancelled awaiting the answer", "cancelled mid-stream"])
async def test_leaving_a_stream_early_closes_its_upstream_connection(how: str) -> None:
    # What makes an upstream vLLM abort the request.
    asked, first = asyncio.Event(), asyncio.Event()

    async def reply(_: bytes, writer: asyncio.StreamWriter) -> None:
        if how != "cancelled awaiting the answer":
            event = sse(chunk("a"))[0]
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (len(event), event))
        asked.set()

    async def consume(backend: OpenAIBackend) -> None:
        async for _ in backend.stream("proposer", MESSAGES, SAMPLING):
            first.set()

    async with serving(reply) as server, contextlib.AsyncExitStack() as stack:
        backend = await Upstreams(stack).backend(Upstream(server.url + "/v1", "m"))
        if how == "closed after a delta":
            deltas = backend.stream("proposer", MESSAGES, SAMPLING)
            assert await anext(deltas) == StreamDelta("a")
            await deltas.aclose()
        else:
            task = asyncio.create_task(consume(backend))
            await (asked if how == "cancelled awaiting the answer" else first).wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await asyncio.wait_for(server.closed.wait(), 5)


async def test_cancelling_a_generate_closes_its_upstream_connection() -> None:
    # A non-streamed draft whose client left: what makes an upstream vLLM abort it.
    asked = asyncio.Event()

    async def reply(_: bytes, writer: asyncio.StreamWriter) -> None:
        asked.set()  # and never answers

    async with serving(reply) as server, contextlib.AsyncExitStack() as stack:
        backend = await Upstreams(stack).backend(Upstream(server.url + "/v1", "m"))
        task = asyncio.create_task(backend.generate("proposer", MESSAGES, SAMPLING, 3))
        await asked.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(server.closed.wait(), 5)


async def test_error_event_mid_stream_raises(ups: Upstreams) -> None:
    events = sse(chunk("a"), {"error": {"message": "engine died", "type": "InternalServerError", "code": 500}},
                 "[DONE]")
    backend = await ups.make(lambda _: httpx.Response(200, stream=Chunks(events)))
    deltas = backend.stream("proposer", MESSAGES, SAMPLING)
    assert await anext(deltas) == StreamDelta("a")
    with pytest.raises(UpstreamUnavailable, match="mid-stream") as caught:
        await anext(deltas)
    assert caught.value.detail == f"upstream {ups.url} failed mid-stream: engine died"


async def test_stream_cut_short_raises(make: Make) -> None:
    backend = await make(lambda _: httpx.Response(200, stream=Chunks(sse(chunk("a")))))
    with pytest.raises(UpstreamUnavailable, match="before it finished"):
        _ = [d async for d in backend.stream("proposer", MESSAGES, SAMPLING)]


CONTEXT = "This model's maximum context length is 2048 tokens. However, your prompt contains at least 2049"


@pytest.mark.parametrize(("status", "body", "error", "match", "detail"), [
    (400, {"error": {"message": "temperature must be non-negative", "param": "temperature"}}, InvalidRequest,
     "^temperature must be non-negative$", None),
    (400, {"error": {"message": CONTEXT, "param": "input_tokens"}}, ContextLengthExceeded, "^This model's", None),
    (400, {"object": "error", "message": "max_tokens=5000 cannot be greater than max_model_len=2048"},
     ContextLengthExceeded, "max_model_len", None),
    (422, "unprocessable thing", InvalidRequest, "^unprocessable thing$", None),
    (401, {"error": {"message": f"Incorrect API key provided: {KEY}"}}, UpstreamUnavailable, "misconfigured",
     "answered 401: Incorrect API key provided: ***"),
    (403, {"message": "forbidden"}, UpstreamUnavailable, "not the client's fault", "answered 403: forbidden"),
    (404, {"error": {"message": "The model `m` does not exist."}}, UpstreamUnavailable, "misconfigured",
     "answered 404: The model `m` does not exist."),
    (429, {"error": {"message": "slow down"}}, UpstreamRateLimited, "rate limiting", "answered 429: slow down"),
    (500, "<html>oops</html>", UpstreamUnavailable, r"failed \(500\)", "answered 500: <html>oops</html>"),
    (503, b"", UpstreamUnavailable, r"failed \(503\)", "answered 503: Service Unavailable"),
])
@pytest.mark.parametrize("streamed", [False, True])
async def test_upstream_errors_map_to_domain_errors(ups: Upstreams, status: int, body: Any, error: type[Exception],
                                                   match: str, detail: str | None, streamed: bool) -> None:
    kind = "json" if isinstance(body, dict) else "text" if isinstance(body, str) else "content"
    backend = await ups.make(lambda _: httpx.Response(status, **{kind: body}), retries=0)
    with pytest.raises(error, match=match) as caught:
        if streamed:
            _ = [d async for d in backend.stream("proposer", MESSAGES, SAMPLING)]
        else:
            await backend.generate("proposer", MESSAGES, SAMPLING, n=1)
    assert type(caught.value) is error and KEY not in str(caught.value)
    assert ups.url not in caught.value.message  # type: ignore[attr-defined]
    if detail is not None:  # the upstream's URL and words are for the logs
        assert caught.value.detail == f"upstream {ups.url} {detail}"  # type: ignore[attr-defined]
    if status == 400 and error is InvalidRequest:
        assert caught.value.param == "temperature"  # type: ignore[attr-defined]


LONG_KEY = "sk-" + "0123456789abcdef" * 2 + "X"  # 36 characters


@pytest.mark.parametrize("status", [400, 500])
@pytest.mark.parametrize("as_json", [False, True])
async def test_a_key_across_the_cut_of_an_error_text_is_masked_whole(ups: Upstreams, status: int,
                                                                      as_json: bool) -> None:
    # Error texts are cut to 500 characters: a key that the cut splits must not leave in part.
    text = "x" * 469 + f"{LONG_KEY} is not a valid API key"  # 31 of its characters before the cut
    body = {"error": {"message": text}} if as_json else text
    url = await ups.serve(lambda _: httpx.Response(status, **({"json": body} if as_json else {"text": body})))
    backend = await ups.backend(Upstream(url, "m", LONG_KEY), retries=0)
    with pytest.raises(InvalidRequest if status == 400 else UpstreamUnavailable) as caught:
        await backend.generate("proposer", MESSAGES, SAMPLING, n=1)
    upstream_words = caught.value.message if status == 400 else caught.value.detail or ""
    assert "***" in upstream_words and len(upstream_words) < 600
    for said in (caught.value.message, caught.value.detail or ""):
        assert not any(LONG_KEY[:n] in said for n in range(8, len(LONG_KEY) + 1))


async def test_transport_errors_map_to_domain_errors(ups: Upstreams, unused_port: int) -> None:
    async def cut(_: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        writer.close()

    async def silent(_: bytes, __: asyncio.StreamWriter) -> None:
        pass

    async with serving(cut) as cutting, serving(silent) as quiet:
        for url, error, message in [(cutting.url, UpstreamUnavailable, "failed"),
                                    (quiet.url, UpstreamTimeout, "did not answer in time"),
                                    (f"http://127.0.0.1:{unused_port}", UpstreamUnavailable, "could not be reached")]:
            backend = await ups.backend(Upstream(url + "/v1", "m"), timeout=0.2, connect_timeout=0.2, retries=0)
            for call in (backend.generate("proposer", MESSAGES, SAMPLING, n=1),
                         anext(backend.stream("proposer", MESSAGES, SAMPLING))):
                with pytest.raises(error, match=message) as caught:
                    await call
                assert url not in caught.value.message and (caught.value.detail or "").startswith(f"upstream {url}")
            with pytest.raises(UpstreamUnavailable):
                await backend.check_health()


async def test_the_read_timeout_bounds_each_wait_not_the_whole_stream(ups: Upstreams) -> None:
    async def slow(_: bytes, writer: asyncio.StreamWriter) -> None:
        # Pieces 0.1 s apart, each within the 0.3 s timeout, the whole well past it.
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for event in [*sse(chunk("a"), chunk("b"), chunk("c"), chunk("d", "stop")), b"data: [DONE]\n\n"]:
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await asyncio.sleep(0.1)
        writer.write(b"0\r\n\r\n")

    async with serving(slow) as server:
        backend = await ups.backend(Upstream(server.url + "/v1", "m"), timeout=0.3)
        deltas = [d.text async for d in backend.stream("proposer", MESSAGES, SAMPLING)]
    assert deltas == ["a", "b", "c", "d", ""]


async def test_health_checks_each_distinct_upstream(ups: Upstreams) -> None:
    seen, handler = recording(lambda r: httpx.Response(200, json={"data": []}))
    p = await ups.serve(handler)
    a = await ups.serve(lambda r: httpx.Response(503))
    backend = await ups.backend(Upstream(p, "pm"), Upstream(p + "/", "am"))
    await backend.check_health()
    assert [str(r.url) for r in seen] == [f"{p}/models"]
    backend = await ups.backend(Upstream(p, "pm"), Upstream(a, "am"))
    with pytest.raises(UpstreamUnavailable, match=r"failed \(503\)") as caught:
        await backend.check_health()
    assert caught.value.detail == f"upstream {a} answered 503: Service Unavailable"
    assert backend.retried.total() == 0  # a health check reports what it sees


async def test_lifecycle_starts_once_and_closes(make: Make) -> None:
    backend = OpenAIBackend(Upstream("http://127.0.0.1:9/v1", "m"))
    with pytest.raises(RuntimeError):
        await backend.generate("proposer", MESSAGES, SAMPLING, n=1)
    backend = await make(lambda _: httpx.Response(200, json=completion("a")))
    await backend.start()
    await backend.generate("proposer", MESSAGES, SAMPLING, n=1)
    await backend.close()
    with pytest.raises(UpstreamUnavailable, match="not started"):
        await backend.check_health()
    with pytest.raises(RuntimeError):
        await backend.generate("proposer", MESSAGES, SAMPLING, n=1)


async def test_a_named_role_and_a_discovering_role_on_one_upstream_keep_their_models(ups: Upstreams) -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": "first"}, {"id": "named"}]})
        return httpx.Response(200, json=completion("a"))
    seen, handler = recording(reply)
    url = await ups.serve(handler)
    backend = await ups.backend(Upstream(url, "named"), Upstream(url))
    await asyncio.gather(*(backend.generate(role, MESSAGES, SAMPLING, n=1)  # type: ignore[arg-type]
                           for role in ("aggregator", "proposer", "aggregator")))
    chats = [json.loads(r.content)["model"] for r in seen if r.url.path.endswith("/chat/completions")]
    assert sorted(chats) == ["first", "first", "named"]
    assert [r.url.path for r in seen].count("/v1/models") == 1
