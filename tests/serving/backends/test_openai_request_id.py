"""The id of the request being served goes upstream as X-Request-ID (serving/request_context.py)."""

from __future__ import annotations

import asyncio

import httpx

from serving.backends.base import Sampling
from serving.request_context import request_id
from tests.serving.backends.scripted_upstreams import Make, chunk, completion, recording, sse

MESSAGES = [{"role": "user", "content": "2+2?"}]


async def test_each_call_sends_the_id_of_its_request(make: Make) -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        if b'"stream":true' in request.content:
            return httpx.Response(200, content=b"".join(sse(chunk("4", "stop"), "[DONE]")))
        return httpx.Response(200, json=completion("4"))

    seen, handler = recording(reply)
    backend = await make(handler)
    sampling = Sampling(0.7, 1.0)

    async def serve(rid: str | None) -> None:
        request_id.set(rid)  # as the HTTP layer does, in the request's own task
        await backend.generate("proposer", MESSAGES, sampling, n=1)
        async for _ in backend.stream("aggregator", MESSAGES, sampling):
            pass

    await asyncio.gather(asyncio.create_task(serve("a-1")), asyncio.create_task(serve("b-2")))
    await asyncio.create_task(serve(None))
    ids = [r.headers.get("x-request-id") for r in seen]
    assert sorted(ids[:4]) == ["a-1", "a-1", "b-2", "b-2"] and ids[4:] == [None, None]
    assert all(r.headers["authorization"] for r in seen)  # the other headers are kept
