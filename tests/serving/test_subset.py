"""Subset aggregation (Recursive Self-Aggregation): every aggregation reads its own random K of the
round before's N outputs; seeded requests pick the same subsets every time; the context budget
counts K drafts per prompt."""

from __future__ import annotations

import pytest

from serving.backends.base import Sampling
from serving.errors import ContextLengthExceeded
from serving.format import Message, aggregator_messages
from serving.pipeline import AnswerDone, LayerDone, Pipeline, PipelineParams
from tests.fakes import Call, ScriptedBackend

CONVERSATION: list[Message] = [{"role": "user", "content": "What is 2+2?"}]
NAMES = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]


def params(proposals: int, rounds: int, subset: int | None, seed: int | None = 5,
           max_tokens: int | None = 64) -> PipelineParams:
    return PipelineParams(proposals, rounds, Sampling(0.7, 0.95, max_tokens=max_tokens, seed=seed),
                          Sampling(0.3, 1.0, max_tokens=16, seed=seed), subset=subset)


def named(call: Call, i: int) -> str:
    """Round 0 drafts are NAMES; an aggregation's draft lists what it read, in the order it read them."""
    if call.role == "proposer":
        return NAMES[i]
    return "read " + " ".join(read(call))


def read(call: Call) -> list[str]:
    """The round-0 drafts an aggregation prompt holds (directly, or inside a round-1 draft)."""
    prompt = call.messages[0]["content"]
    return sorted(name for name in NAMES if name in prompt)


def aggregations(backend: ScriptedBackend) -> list[Call]:
    return [c for c in backend.calls if c.role == "aggregator"]


async def test_each_aggregation_reads_its_own_k_drafts() -> None:
    backend = ScriptedBackend(reply=named)
    [answer] = await Pipeline(backend).run(CONVERSATION, params(6, 2, 2))
    # Round 1 is six requests of one sample, each on its own prompt; then the final answer.
    assert [(c.role, c.n) for c in backend.calls] == [("proposer", 6)] + [("aggregator", 1)] * 7
    round1 = aggregations(backend)[:6]
    subsets = [read(c) for c in round1]
    assert all(len(s) == 2 for s in subsets)  # two distinct drafts each
    assert len({tuple(s) for s in subsets}) > 1  # each its own subset
    # Each prompt is the aggregation prompt of exactly its K drafts.
    layer0 = answer.layers[0]
    assert layer0.subsets is not None and len(layer0.subsets) == 6
    for call, drafts in zip(round1, layer0.subsets, strict=True):
        assert len(drafts) == 2 and call.messages == aggregator_messages(CONVERSATION, drafts)
    # The final answer reads K of round 1's six outputs.
    final = backend.calls[-1]
    layer1 = answer.layers[1]
    assert layer1.subsets is not None and len(layer1.subsets) == 1
    assert final.messages == aggregator_messages(CONVERSATION, layer1.subsets[0])
    assert all(d in layer1.outputs for d in layer1.subsets[0]) and len(layer1.subsets[0]) == 2
    assert answer.usage.requests == 8 and [u.requests for u in answer.usage_by_round] == [1, 6, 1]


async def test_subset_requests_have_distinct_seeds() -> None:
    backend = ScriptedBackend(reply=named)
    await Pipeline(backend).run(CONVERSATION, params(4, 2, 2))
    seeds = [c.sampling.seed for c in backend.calls]
    assert len(set(seeds)) == len(seeds)


@pytest.mark.parametrize("subset", [None, 3, 7])
async def test_k_of_n_or_more_reads_all_drafts_in_one_request(subset: int | None) -> None:
    backend = ScriptedBackend(reply=named)
    [answer] = await Pipeline(backend).run(CONVERSATION, params(3, 2, subset))
    assert [(c.role, c.n) for c in backend.calls] == [("proposer", 3), ("aggregator", 3), ("aggregator", 1)]
    assert read(backend.calls[1]) == ["alpha", "bravo", "charlie"]
    assert all(layer.subsets is None for layer in answer.layers)


async def picks(seed: int | None) -> list[list[str]]:
    backend = ScriptedBackend(reply=named)
    await Pipeline(backend).run(CONVERSATION, params(6, 2, 2, seed=seed), n=2)
    return sorted([*read(c), str(c.sampling.seed)] for c in aggregations(backend))


async def test_seeded_requests_pick_the_same_subsets_and_unseeded_ones_differ() -> None:
    assert await picks(5) == await picks(5)
    assert await picks(5) != await picks(6)
    runs = [[p[:-1] for p in await picks(None)] for _ in range(4)]
    assert any(run != runs[0] for run in runs[1:])


async def test_streamed_subsets_match_the_run() -> None:
    backend = ScriptedBackend(reply=named)
    events = [e async for e in Pipeline(backend).stream(CONVERSATION, params(5, 2, 3), budget=None)]
    layers = [e.layer for e in events if isinstance(e, LayerDone)]
    assert layers[0].subsets is not None and len(layers[0].subsets) == 5
    assert all(len(s) == 3 for s in layers[0].subsets)
    assert backend.calls[-1].messages[0]["content"].count("read") == 3
    done = events[-1]
    assert isinstance(done, AnswerDone) and done.usage.requests == 7


def long_conversation(words: int) -> list[Message]:
    return [{"role": "user", "content": "seven " * words}]


async def test_budget_counts_k_drafts_per_prompt() -> None:
    # 16 drafts of at least 32 tokens do not fit beside this conversation in 2,048 tokens; 2 do.
    conversation = long_conversation(1400)
    backend = ScriptedBackend(context_length=2048, reply=lambda call, i: f"draft {i}")
    with pytest.raises(ContextLengthExceeded):
        await Pipeline(backend, min_draft_tokens=32).run(conversation, params(16, 2, None, max_tokens=None))
    with pytest.raises(ContextLengthExceeded):
        await Pipeline(backend, min_draft_tokens=32).run(conversation, params(16, 2, 16, max_tokens=None))
    assert backend.calls == []
    [answer] = await Pipeline(backend, min_draft_tokens=32).run(conversation, params(16, 2, 2, max_tokens=None))
    assert backend.calls[0].n == 16 and len(answer.layers) == 2
    base = backend.tokens(aggregator_messages(conversation, ["", ""]))
    free = 2048 - base
    assert answer.drafts_capped_to == min(free // 3, (free - 16) // 2)
    for call in backend.calls:
        assert backend.tokens(call.messages) + (call.sampling.max_tokens or 1) <= 2048
