"""The benchmark's own pieces: the stub keeps its schedule and counts, the load generator measures."""

from __future__ import annotations

import asyncio
import json

from bench.client import Connection, get_json_bytes
from bench.loadgen import direct_answer, percentile, run_load
from bench.stub import Timing
from tests.bench.inprocess import stub


async def test_direct_answers_take_the_stubs_time_and_its_requests() -> None:
    async with stub(Timing(ttft=0.02, tpot=0.002, tokens=8)) as port:
        connections = [Connection(port) for _ in range(2)]
        outcomes, _ = await run_load(direct_answer(3, 2, stream=True), connections, requests=4, seconds=10)
        for connection in connections:
            connection.close()
        stats = json.loads(await get_json_bytes(port, "/stats"))
    assert len(outcomes) == 4 and all(o.ok for o in outcomes)
    # Three calls of 20 ms + 7 x 2 ms each: at least 100 ms, far less than a second on any machine.
    assert all(0.1 <= o.latency < 1.0 for o in outcomes)
    assert all(o.ttft is not None and o.ttft >= 0.08 for o in outcomes)
    assert all(len(o.relay_us) == 8 and min(o.relay_us) >= 0 for o in outcomes)
    # Each client keeps its connection (the other two: /health and /stats).
    assert stats["chat_requests"] == 12 and stats["streams"] == 4 and stats["connections"] == 4
    assert stats["cancelled"] == 0 and stats["completed"] == 12


async def test_a_client_leaving_mid_stream_is_counted_as_cancelled() -> None:
    async with stub(Timing(ttft=0.01, tpot=0.05, tokens=100)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = b'{"stream": true, "messages": []}'
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        await reader.readuntil(b"content")
        writer.close()
        # The stub sees the close when its next token fails to go out: ask until it has counted it.
        deadline = asyncio.get_running_loop().time() + 5
        while (stats := json.loads(await get_json_bytes(port, "/stats")))["cancelled"] == 0:
            assert asyncio.get_running_loop().time() < deadline, stats
            await asyncio.sleep(0.01)
    assert stats["cancelled"] == 1 and stats["completed"] == 0


async def test_trace_places_each_call_between_the_clients_stamps() -> None:
    from bench.trace import _hops

    async with stub(Timing(ttft=0.01, tpot=0.001, tokens=4)) as port:
        connection = Connection(port)
        hops = await _hops(direct_answer(3, 2, stream=False), connection, port)
        connection.close()
        assert json.loads(await get_json_bytes(port, "/trace")) == []  # read once, then forgotten
    # in, turn 0, turn 1, out: the stub's own 13 ms per call excluded, so each hop is far less.
    assert len(hops) == 4 and all(0 <= hop < 10_000 for hop in hops)


async def test_the_stub_counts_prompts_when_given_a_context() -> None:
    from serving.backends.base import Sampling
    from serving.backends.openai import OpenAIBackend
    from serving.backends.openai_target import Upstream
    from serving.pipeline import Pipeline, PipelineParams

    async with stub(Timing(ttft=0.001, tpot=0.0, tokens=4), context=4096) as port:
        backend = OpenAIBackend(Upstream(f"http://127.0.0.1:{port}/v1", model="stub"))
        await backend.start()
        try:
            size = await backend.prompt_size("proposer", [{"role": "user", "content": "12345678"}])
            [answer] = await Pipeline(backend).run([{"role": "user", "content": "hi"}], PipelineParams(
                3, 2, Sampling(0.7, 0.95), Sampling(0.7, 1.0, max_tokens=16)))
        finally:
            await backend.close()
        stats = json.loads(await get_json_bytes(port, "/stats"))
    assert size is not None and (size.tokens, size.context_length) == (2 + 4, 4096)
    # The budget is planned (two counts); the stub's short drafts fit by their bytes: no more counts.
    assert answer.drafts_capped_to is not None and stats["tokenize_requests"] == 1 + 2


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile(list(range(1, 101)), 99) == 99
