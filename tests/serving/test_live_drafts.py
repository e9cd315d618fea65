"""Live drafts: with `live_drafts` a stream yields every draft's text before the answer; round 0's
first draft is its own streamed request, alongside one request for the other N - 1."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from serving.backends.base import Generation, Role, Sampling
from serving.errors import UpstreamTimeout
from serving.format import Message
from serving.live_draft import DraftDelta
from serving.pipeline import AnswerDelta, AnswerDone, Event, LayerDone, Pipeline, PipelineParams
from tests.fakes import ScriptedBackend

CONVERSATION: list[Message] = [{"role": "user", "content": "What is 2+2?"}]
DRAFTS = Sampling(temperature=0.7, top_p=0.95, max_tokens=64, seed=5)
FINAL = Sampling(temperature=0.3, top_p=1.0, max_tokens=32, seed=5)


def params(proposals: int = 3, rounds: int = 2, drafts: Sampling = DRAFTS) -> PipelineParams:
    return PipelineParams(proposals=proposals, rounds=rounds, draft_sampling=drafts, final_sampling=FINAL)


def reply(call: object, i: int) -> str:
    return f"draft {i} of three words"


@dataclass
class HeldGenerate(ScriptedBackend):
    """`generate` waits for `release` (a streamed request does not): a round-0 batch still running."""

    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def generate(self, role: Role, messages: Sequence[Message], sampling: Sampling, n: int) -> Generation:
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return await super().generate(role, messages, sampling, n)


async def events(backend: ScriptedBackend, p: PipelineParams) -> list[Event]:
    return [e async for e in Pipeline(backend).stream(CONVERSATION, p, budget=None, live_drafts=True)]


async def test_every_draft_comes_before_its_round_ends_and_the_answer() -> None:
    backend = ScriptedBackend(reply=reply)
    got = await events(backend, params(3, 2))
    order = [(type(e).__name__, getattr(e, "round", None), getattr(e, "draft", None)) for e in got]
    first_piece_count = len("draft 0 of three words".split())
    assert order[:first_piece_count] == [("DraftDelta", 0, 0)] * first_piece_count
    assert order[first_piece_count:first_piece_count + 3] == [
        ("DraftDelta", 0, 1), ("DraftDelta", 0, 2), ("LayerDone", None, None)]
    rest = order[first_piece_count + 3:]
    assert rest[:4] == [("DraftDelta", 1, 0), ("DraftDelta", 1, 1), ("DraftDelta", 1, 2), ("LayerDone", None, None)]
    assert {kind for kind, _, _ in rest[4:]} == {"AnswerDelta", "AnswerDone"}
    drafts: dict[tuple[int, int], str] = {}
    for e in got:
        if isinstance(e, DraftDelta):
            drafts[e.round, e.draft] = drafts.get((e.round, e.draft), "") + e.text
    layers = [e.layer for e in got if isinstance(e, LayerDone)]
    assert [drafts[0, k] for k in range(3)] == layers[0].drafts == layers[0].outputs
    assert [drafts[1, k] for k in range(3)] == layers[1].drafts


async def test_round_zero_is_a_streamed_first_draft_and_one_request_for_the_rest() -> None:
    backend = ScriptedBackend(reply=reply)
    await events(backend, params(4, 1))
    assert [(c.role, c.n, c.stream) for c in backend.calls] == [
        ("proposer", 1, True), ("proposer", 3, False), ("aggregator", 1, True)]
    assert backend.calls[0].messages == backend.calls[1].messages  # one prompt: its cached prefix is shared


async def test_the_first_draft_streams_while_the_others_are_still_generated() -> None:
    backend = HeldGenerate(reply=reply)
    stream = Pipeline(backend).stream(CONVERSATION, params(3, 1), budget=None, live_drafts=True)
    first = await anext(stream)
    assert isinstance(first, DraftDelta) and (first.round, first.draft, first.text) == (0, 0, "draft")
    assert not backend.release.is_set()
    backend.release.set()
    rest = [e async for e in stream]
    assert isinstance(rest[-1], AnswerDone)


async def test_usage_counts_both_requests_of_round_zero() -> None:
    backend = ScriptedBackend(reply=reply)
    done = (await events(backend, params(3, 1)))[-1]
    assert isinstance(done, AnswerDone)
    round0 = done.usage_by_round[0]
    assert round0.requests == 2 and round0.completion_tokens == 3 * 5
    assert round0.prompt_tokens == 2 * ScriptedBackend.usage(backend.calls[0], []).prompt_tokens
    assert done.usage.requests == 3


async def test_seeds_differ_between_the_two_requests_and_repeat_across_runs() -> None:
    backend, again = ScriptedBackend(reply=reply), ScriptedBackend(reply=reply)
    await events(backend, params(3, 2))
    await events(again, params(3, 2))
    seeds = [c.sampling.seed for c in backend.calls]
    assert len(set(seeds)) == len(seeds) == 4
    assert seeds == [c.sampling.seed for c in again.calls]
    assert seeds[0] == 5  # the first draft keeps the seed round 0 has without live drafts


async def test_greedy_drafts_stream_the_one_sample_and_repeat_it() -> None:
    backend = ScriptedBackend(reply=reply)
    got = await events(backend, params(3, 1, Sampling(0.0, 1.0)))
    assert [(c.n, c.stream) for c in backend.calls] == [(1, True), (1, True)]
    layer = next(e.layer for e in got if isinstance(e, LayerDone))
    assert layer.drafts == ["draft 0 of three words"] * 3
    assert [e.draft for e in got if isinstance(e, DraftDelta) and e.draft > 0] == [1, 2]


async def test_one_proposal_is_one_streamed_request() -> None:
    backend = ScriptedBackend(reply=reply)
    await events(backend, params(1, 1))
    assert [(c.n, c.stream) for c in backend.calls] == [(1, True), (1, True)]


async def test_an_empty_first_draft_is_still_announced() -> None:
    backend = ScriptedBackend(reply=lambda call, i: "" if call.stream and call.role == "proposer" else "x")
    got = await events(backend, params(2, 1))
    assert [(e.draft, e.text) for e in got if isinstance(e, DraftDelta)] == [(0, ""), (1, "x")]


async def test_closing_while_the_first_draft_streams_aborts_both_requests() -> None:
    backend = HeldGenerate(reply=reply)
    stream = Pipeline(backend).stream(CONVERSATION, params(3, 1), budget=None, live_drafts=True)
    assert isinstance(await anext(stream), DraftDelta)
    await stream.aclose()
    assert backend.cancelled == 2  # the held batch and the streamed first draft
    assert not backend.release.is_set()


async def test_a_failing_batch_ends_the_stream_with_its_error() -> None:
    backend = ScriptedBackend(reply=reply, fail_on_call=2, error=UpstreamTimeout("slow"))
    with pytest.raises(UpstreamTimeout):
        await events(backend, params(3, 1))
    assert not any(c.role == "aggregator" for c in backend.calls)


async def test_without_live_drafts_the_stream_is_unchanged() -> None:
    backend = ScriptedBackend(reply=reply)
    got = [e async for e in Pipeline(backend).stream(CONVERSATION, params(3, 1), budget=None)]
    assert not any(isinstance(e, DraftDelta) for e in got)
    assert [(c.n, c.stream) for c in backend.calls] == [(3, False), (1, True)]
    assert any(isinstance(e, AnswerDelta) for e in got)
