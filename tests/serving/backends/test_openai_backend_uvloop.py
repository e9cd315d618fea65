"""The upstream client on uvloop, the event loop `aft serve` runs (the other tests use asyncio's own):
uvloop's transports are not asyncio's classes, and a client must not rely on them being so."""

from __future__ import annotations

import contextlib

import httpx
import uvloop

from serving.backends.base import Sampling, StreamDelta, Usage
from tests.serving.backends.scripted_upstreams import Chunks, Upstreams, chunk, completion, sse

SAMPLING = Sampling(temperature=0.7, top_p=0.95)


def test_answers_and_streams_on_uvloop() -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        if b'"stream":true' in request.content:
            return httpx.Response(200, stream=Chunks(sse(chunk("a"), chunk("b", "stop"), "[DONE]")))
        return httpx.Response(200, json=completion("4"))

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            backend = await Upstreams(stack).make(reply)
            for _ in range(2):  # the second time on the pooled connection
                generation = await backend.generate("proposer", [{"role": "user", "content": "2+2?"}], SAMPLING, n=1)
                assert [c.text for c in generation.completions] == ["4"]
                deltas = [d async for d in backend.stream("proposer", [{"role": "user", "content": "hi"}], SAMPLING)]
                assert "".join(d.text for d in deltas) == "ab" and deltas[-1] == StreamDelta("", "stop", Usage(0, 0, 1))

    uvloop.run(main())
