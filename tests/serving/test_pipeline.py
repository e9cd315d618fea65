"""The propose-and-aggregate pipeline on a scripted backend."""

import asyncio
from collections.abc import Sequence
from dataclasses import replace

import pytest

from serving.backends.base import PromptSize, ResponseFormat, Role, Sampling, Tools
from serving.errors import InvalidRequest, UpstreamTimeout
from serving.format import AGGREGATION_TEMPLATE, AggregationFormat, Message, aggregation_system
from serving.pipeline import AnswerDelta, AnswerDone, LayerDone, Pipeline, PipelineParams
from tests.fakes import ScriptedBackend

CONVERSATION = [{"role": "user", "content": "What is 2+2?"}]
DRAFTS = Sampling(temperature=0.7, top_p=0.95, max_tokens=64)
FINAL = Sampling(temperature=0.3, top_p=1.0, max_tokens=32, stop=("###",), seed=11)


def params(proposals: int = 5, rounds: int = 2) -> PipelineParams:
    return PipelineParams(proposals=proposals, rounds=rounds, draft_sampling=DRAFTS, final_sampling=FINAL)


async def test_reference_shape_one_request_per_layer() -> None:
    backend = ScriptedBackend()
    [answer] = await Pipeline(backend).run(CONVERSATION, params(5, 2))
    assert [(c.role, c.n) for c in backend.calls] == [("proposer", 5), ("aggregator", 5), ("aggregator", 1)]
    proposals = [f"proposer-1-{i}" for i in range(5)]
    assert backend.calls[0].messages == [{"role": "system", "content": "\n"}, *CONVERSATION]
    assert backend.calls[1].messages[0]["content"] == aggregation_system(proposals)
    round1 = [c for c in answer.layers[1].outputs]
    assert backend.calls[2].messages[0]["content"] == aggregation_system(round1)
    assert answer.text == f"aggregator-{len(aggregation_system(round1))}-0"
    assert [layer.round for layer in answer.layers] == [0, 1]


async def test_drafts_use_draft_sampling_and_answer_final_sampling() -> None:
    backend = ScriptedBackend()
    await Pipeline(backend).run(CONVERSATION, params(3, 2))
    assert backend.calls[0].sampling.temperature == 0.7 and backend.calls[0].sampling.top_p == 0.95
    assert backend.calls[1].sampling.top_p == 0.95
    final = backend.calls[2].sampling
    assert (final.temperature, final.top_p, final.max_tokens, final.stop) == (0.3, 1.0, 32, ("###",))


async def test_seed_differs_per_round_and_answer_but_is_reproducible() -> None:
    backend = ScriptedBackend()
    await Pipeline(backend).run(CONVERSATION, PipelineParams(2, 1, Sampling(0.7, 0.95, seed=5), FINAL), n=2)
    seeds = sorted(c.sampling.seed for c in backend.calls)
    assert len(set(seeds)) == 4
    again = ScriptedBackend()
    await Pipeline(again).run(CONVERSATION, PipelineParams(2, 1, Sampling(0.7, 0.95, seed=5), FINAL), n=2)
    assert sorted(c.sampling.seed for c in again.calls) == seeds


async def test_rounds_zero_is_plain_generation() -> None:
    backend = ScriptedBackend()
    [answer] = await Pipeline(backend).run(CONVERSATION, params(5, 0))
    assert [(c.role, c.n) for c in backend.calls] == [("proposer", 1)]
    assert answer.layers == [] and len(answer.usage_by_round) == 1


async def test_one_proposal_is_sequential_self_refinement() -> None:
    backend = ScriptedBackend()
    await Pipeline(backend).run(CONVERSATION, params(1, 3))
    assert [(c.role, c.n) for c in backend.calls] == [("proposer", 1), ("aggregator", 1),
                                                       ("aggregator", 1), ("aggregator", 1)]


async def test_usage_totals_every_round() -> None:
    backend = ScriptedBackend(reply=lambda call, i: "two words")
    [answer] = await Pipeline(backend).run(CONVERSATION, params(4, 2))
    assert [u.completion_tokens for u in answer.usage_by_round] == [8, 8, 2]
    assert answer.usage.requests == 3
    assert answer.usage.prompt_tokens == sum(u.prompt_tokens for u in answer.usage_by_round)
    assert answer.usage.completion_tokens == 18


async def test_n_answers_are_independent_pipelines() -> None:
    backend = ScriptedBackend()
    answers = await Pipeline(backend).run(CONVERSATION, params(3, 1), n=3)
    assert [a.index for a in answers] == [0, 1, 2]
    assert len(backend.calls) == 3 * 2


async def test_stream_yields_layers_then_tokens_then_done() -> None:
    backend = ScriptedBackend(reply=lambda call, i: f"{call.role} says {i}")
    events = [e async for e in Pipeline(backend).stream(CONVERSATION, params(2, 2), budget=None)]
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["LayerDone", "LayerDone", "AnswerDelta", "AnswerDelta", "AnswerDelta", "AnswerDone"]
    assert "".join(e.text for e in events if isinstance(e, AnswerDelta)) == "aggregator says 0"
    done = events[-1]
    assert isinstance(done, AnswerDone) and done.finish_reason == "stop"
    assert done.usage.requests == 3 and done.usage.completion_tokens == 2 * 3 + 2 * 3 + 3
    assert backend.calls[-1].stream


async def test_stream_n_interleaves_answers_with_their_index() -> None:
    backend = ScriptedBackend(delay=0.001)
    events = [e async for e in Pipeline(backend).stream(CONVERSATION, params(2, 1), n=2, budget=None)]
    done = [e for e in events if isinstance(e, AnswerDone)]
    assert sorted(e.index for e in done) == [0, 1]
    assert sorted({e.index for e in events if isinstance(e, LayerDone)}) == [0, 1]


async def test_error_in_a_layer_propagates() -> None:
    backend = ScriptedBackend(fail_on_call=2, error=UpstreamTimeout("slow"))
    with pytest.raises(UpstreamTimeout):
        await Pipeline(backend).run(CONVERSATION, params(2, 2))
    assert len(backend.calls) == 2


async def test_failure_of_one_answer_cancels_the_others() -> None:
    backend = ScriptedBackend(fail_on_call=1, error=UpstreamTimeout("slow"), delay=0.05)
    with pytest.raises(UpstreamTimeout):
        await Pipeline(backend).run(CONVERSATION, params(2, 1), n=3)
    assert backend.cancelled >= 1


async def test_closing_a_stream_cancels_the_backend_stream() -> None:
    backend = ScriptedBackend(reply=lambda call, i: "a b c d e f", delay=0.01)
    stream = Pipeline(backend).stream(CONVERSATION, params(2, 1), n=2, budget=None)
    async for event in stream:
        if isinstance(event, AnswerDelta):
            break
    await stream.aclose()
    await asyncio.sleep(0)
    assert backend.cancelled >= 1


async def test_greedy_drafts_are_one_sample_repeated() -> None:
    backend = ScriptedBackend(reply=lambda call, i: "same words")
    greedy = PipelineParams(4, 1, Sampling(0.0, 1.0), FINAL)
    [answer] = await Pipeline(backend).run(CONVERSATION, greedy)
    assert [(c.role, c.n) for c in backend.calls] == [("proposer", 1), ("aggregator", 1)]
    assert answer.layers[0].outputs == ["same words"] * 4
    assert answer.usage_by_round[0].completion_tokens == 2  # spent once


class RefusingSchemas(ScriptedBackend):
    """A backend whose engine cannot compile any schema."""

    async def check_sampling(self, sampling: Sampling) -> None:
        await super().check_sampling(sampling)
        if sampling.response_format is not None:
            raise InvalidRequest("the engine cannot compile it", param="response_format")


@pytest.mark.parametrize("stream", [False, True])
async def test_a_schema_the_backend_cannot_compile_is_refused_before_any_draft(stream: bool) -> None:
    shape = ResponseFormat("json_schema", {"type": "object"}, "answer")
    backend = RefusingSchemas()
    params = PipelineParams(3, 2, replace(DRAFTS, response_format=shape), replace(FINAL, response_format=shape))
    with pytest.raises(InvalidRequest, match="cannot compile"):
        if stream:
            pipeline = Pipeline(backend)  # a stream is planned first, as every caller does
            budget = await pipeline.plan(CONVERSATION, params)
            [event async for event in pipeline.stream(CONVERSATION, params, budget=budget)]
        else:
            await Pipeline(backend).run(CONVERSATION, params)
    assert backend.calls == [] and backend.checked == [params.final_sampling]


@pytest.mark.parametrize("subset", [None, 2])
async def test_conversation_first_aggregations_start_with_the_proposer_prompt(subset: int | None) -> None:
    """Every aggregation prompt of the conversation-first format repeats the proposer prompt before
    its drafts (what an engine's prefix cache reuses), and the context budget counts that prompt."""
    conversation = [{"role": "user", "content": "word " * 50}, {"role": "assistant", "content": "ok"},
                    {"role": "user", "content": "What is 2+2?"}]
    backend = ScriptedBackend(context_length=4096)
    counted: list[list[Message]] = []
    count = backend.prompt_size

    async def prompt_size(role: Role, messages: Sequence[Message], tools: Tools | None = None) -> PromptSize | None:
        counted.append(list(messages))
        return await count(role, messages, tools)

    backend.prompt_size = prompt_size  # type: ignore[method-assign]
    pipeline = Pipeline(backend, aggregation_format=AggregationFormat.CONVERSATION_FIRST)
    await pipeline.run(conversation, replace(params(3, 2), subset=subset))
    proposer = backend.calls[0].messages
    aggregations = backend.calls[1:]
    assert len(aggregations) == (2 if subset is None else 4) and all(c.role == "aggregator" for c in aggregations)
    for call in aggregations:
        assert call.messages[:-1] == proposer
        assert call.messages[-1]["role"] == "user" and call.messages[-1]["content"].startswith(AGGREGATION_TEMPLATE)
    planned = counted[0]  # the budget's aggregation prompt, counted without its drafts
    assert planned[:-1] == proposer and planned[-1]["content"].startswith(AGGREGATION_TEMPLATE)
