"""The context budget on a scripted backend that counts a token per word and, like an engine,
refuses a prompt that leaves no room: drafts capped so every prompt fits, refusal before any
generation, drafts trimmed when their text takes more tokens in the prompt than they were."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from serving.backends.base import Sampling
from serving.budget import DraftBudget, fit_drafts
from serving.errors import ContextLengthExceeded
from serving.format import Message, aggregator_messages, proposer_messages
from serving.pipeline import AnswerDone, LayerDone, Pipeline, PipelineParams
from tests.fakes import Call, ScriptedBackend

FOX: list[Message] = [{"role": "user", "content": "the quick brown fox"}]


def filling(backend: ScriptedBackend, word: str = "w") -> Callable[[Call, int], str]:
    """Replies that run to max_tokens, clamped to what fits (a model that never stops, on vLLM)."""
    def reply(call: Call, i: int) -> str:
        assert backend.context_length is not None
        room = backend.context_length - backend.tokens(call.messages)
        words = room if call.sampling.max_tokens is None else min(call.sampling.max_tokens, room)
        return " ".join([word] * words)
    return reply


def params(proposals: int, rounds: int, *, answer: int | None = 16, drafts: int | None = 4096) -> PipelineParams:
    return PipelineParams(proposals, rounds, Sampling(0.7, 0.95, max_tokens=drafts),
                          Sampling(0.7, 1.0, max_tokens=answer))


def base_tokens(backend: ScriptedBackend, conversation: list[Message], proposals: int) -> int:
    return backend.tokens(aggregator_messages(conversation, [""] * proposals))


def assert_every_call_fits(backend: ScriptedBackend) -> None:
    assert backend.context_length is not None
    for call in backend.calls:
        assert backend.tokens(call.messages) + (call.sampling.max_tokens or 1) <= backend.context_length


async def test_issue_11_drafts_fit_the_aggregation_prompt() -> None:
    # 2,048-token context, N = 3, rounds = 2, max_tokens 16, drafts allowed 4096: the drafts ran
    # to the whole context and the aggregation prompt overflowed.
    backend = ScriptedBackend(context_length=2048)
    backend.reply = filling(backend)
    [answer] = await Pipeline(backend).run(FOX, params(3, 2))
    assert [(c.role, c.n) for c in backend.calls] == [("proposer", 3), ("aggregator", 3), ("aggregator", 1)]
    assert_every_call_fits(backend)
    cap = backend.calls[0].sampling.max_tokens
    assert cap is not None and cap < 2048
    assert answer.drafts_capped_to == cap and answer.drafts_trimmed == 0
    assert backend.calls[-1].sampling.max_tokens == 16


@pytest.mark.parametrize(("rounds", "answer"), [(1, 16), (2, 16), (1, 600), (2, None), (1, None)])
async def test_cap_leaves_room_for_the_drafts_and_the_answer(rounds: int, answer: int | None) -> None:
    backend = ScriptedBackend(context_length=2048)
    backend.reply = filling(backend)
    [result] = await Pipeline(backend).run(FOX, params(3, rounds, answer=answer))
    free = 2048 - base_tokens(backend, FOX, 3)
    # The final aggregation holds 3 drafts and the answer (one draft's length when max_tokens is
    # not given); an intermediate one holds 3 drafts and its own draft.
    expected = (free - answer) // 3 if answer is not None else free // 4
    if rounds >= 2:
        expected = min(expected, free // 4)
    assert [c.sampling.max_tokens for c in backend.calls[:-1]] == [expected] * rounds
    assert result.drafts_capped_to == expected
    assert_every_call_fits(backend)


async def test_drafts_that_fit_keep_their_max_tokens() -> None:
    backend = ScriptedBackend(context_length=2048)
    backend.reply = filling(backend)
    [answer] = await Pipeline(backend).run(FOX, params(3, 2, drafts=64))
    assert [c.sampling.max_tokens for c in backend.calls] == [64, 64, 16]
    assert answer.drafts_capped_to is None and answer.drafts_trimmed == 0


async def test_no_room_is_refused_before_any_generation() -> None:
    long = [{"role": "user", "content": "seven " * 1900}]
    backend = ScriptedBackend(context_length=2048)
    pipeline = Pipeline(backend, min_draft_tokens=32)
    with pytest.raises(ContextLengthExceeded) as refused:
        await pipeline.run(long, params(3, 2))
    base = base_tokens(backend, long, 3)
    message = refused.value.message
    for number in (base, 2048, 3, 16, 2048 - base - 16, 32):
        assert str(number) in message
    assert refused.value.code == "context_length_exceeded" and refused.value.param == "messages"
    with pytest.raises(ContextLengthExceeded):
        await pipeline.plan(long, params(3, 2))
    assert backend.calls == []


async def test_answer_max_tokens_that_leaves_no_room_is_refused() -> None:
    backend = ScriptedBackend(context_length=2048)
    with pytest.raises(ContextLengthExceeded, match="max_tokens"):
        await Pipeline(backend).run(FOX, params(3, 1, answer=2000))
    assert backend.calls == []


async def test_small_drafts_asked_for_are_no_refusal() -> None:
    # The floor guards drafts the budget would shrink; a client asking for 8-token drafts gets them.
    conversation: list[Message] = [{"role": "user", "content": "seven " * 1840}]
    backend = ScriptedBackend(context_length=2048)
    backend.reply = filling(backend)
    free = 2048 - base_tokens(backend, conversation, 3) - 16
    assert 8 * 3 <= free < 32 * 3
    [answer] = await Pipeline(backend, min_draft_tokens=32).run(conversation, params(3, 1, drafts=8))
    assert backend.calls[0].sampling.max_tokens == 8 and answer.drafts_capped_to is None


async def test_drafts_longer_in_the_prompt_are_trimmed_to_fit() -> None:
    # Each "~" takes one token more in a prompt than it was generated as (a byte decoded to U+FFFD).
    backend = ScriptedBackend(context_length=2048, count_tokens=lambda text: len(text.split()) + text.count("~"))
    backend.reply = filling(backend, "~")
    pipeline = Pipeline(backend)
    events = [e async for e in pipeline.stream(FOX, params(3, 2), budget=await pipeline.plan(FOX, params(3, 2)))]
    assert_every_call_fits(backend)
    layers = [e.layer for e in events if isinstance(e, LayerDone)]
    assert [layer.trimmed for layer in layers] == [3, 3]
    for layer, call in zip(layers, backend.calls[1:], strict=True):
        assert call.messages == aggregator_messages(FOX, layer.outputs)  # the aggregator saw the trimmed drafts
    done = events[-1]
    assert isinstance(done, AnswerDone) and done.drafts_trimmed == 6
    assert done.drafts_capped_to == backend.calls[0].sampling.max_tokens


async def test_the_longest_drafts_are_cut_first() -> None:
    backend = ScriptedBackend(context_length=2048)
    base = base_tokens(backend, FOX, 3)
    drafts = ["a " * 10, "b " * 300, "c " * 200]
    # Room for 350 of their 510 words: the two long drafts come down to one length, the short one stays.
    budget = DraftBudget(100, True, base, base + 350 + 16, 16)
    fitted, cut = await fit_drafts(backend, FOX, drafts, budget, final=True)
    assert cut == 2 and fitted[0] == drafts[0]
    assert abs(len(fitted[1]) - len(fitted[2])) <= 1
    assert 300 <= backend.tokens(aggregator_messages(FOX, fitted)) - base <= 350


async def test_drafts_that_never_fit_by_cutting_are_dropped() -> None:
    # A backend whose count does not shrink as drafts are cut (say a draft only of "~", each
    # counting as a hundred tokens): after a few cuts the drafts are left out.
    backend = ScriptedBackend(context_length=2048, count_tokens=lambda text: len(text.split()) + 100 * text.count("~"))
    base = base_tokens(backend, FOX, 2)
    budget = DraftBudget(100, True, base, 2048, 16)
    fitted, cut = await fit_drafts(backend, FOX, ["~" * 2000, "fine"], budget, final=True)
    assert fitted == ["", ""] and cut == 2


async def test_drafts_that_fit_are_not_trimmed() -> None:
    backend = ScriptedBackend(context_length=2048)
    backend.reply = filling(backend)
    [answer] = await Pipeline(backend).run(FOX, params(5, 3, answer=None))
    assert [layer.trimmed for layer in answer.layers] == [0, 0, 0]
    assert all(len(o.split()) == answer.drafts_capped_to for layer in answer.layers for o in layer.outputs)


async def test_prompts_counted_once_per_request_and_once_per_aggregation_that_may_not_fit() -> None:
    backend = ScriptedBackend(context_length=2048)
    backend.reply = filling(backend)
    await Pipeline(backend).run(FOX, params(3, 2), n=3)
    # The prompts without drafts once for all answers (proposer, aggregator); each aggregation
    # whose drafts fill their budget once.
    assert backend.prompt_sizes == 2 + 3 * 2


async def test_issue_22_an_aggregation_that_fits_by_its_bytes_is_not_counted() -> None:
    # Every round cost the upstream a /tokenize round trip, even for drafts far shorter than their room.
    backend = ScriptedBackend(context_length=2048)
    [answer] = await Pipeline(backend).run(FOX, params(3, 2), n=1)
    assert backend.prompt_sizes == 2  # the planning counts only
    assert [c.role for c in backend.calls] == ["proposer", "aggregator", "aggregator"]
    assert answer.drafts_trimmed == 0


async def test_issue_22_a_tight_aggregation_is_still_counted() -> None:
    # 200 bytes of drafts in 100 words (tokens here): the bound (bytes) says they might not fit in
    # 150 tokens, the count says they do.
    backend = ScriptedBackend(context_length=2048)
    base = base_tokens(backend, FOX, 2)
    drafts = ["a " * 50, "b " * 50]
    budget = DraftBudget(100, True, base, base + 150 + 16, 16)
    assert await fit_drafts(backend, FOX, drafts, budget, final=True) == (drafts, 0)
    assert backend.prompt_sizes == 1
    # With room for every byte, no count.
    roomy = DraftBudget(100, True, base, base + 1000 + 16, 16)
    assert await fit_drafts(backend, FOX, drafts, roomy, final=True) == (drafts, 0)
    assert backend.prompt_sizes == 1


async def test_plain_generation_counts_nothing() -> None:
    backend = ScriptedBackend(context_length=2048)
    [answer] = await Pipeline(backend).run(FOX, params(3, 0))
    assert backend.prompt_sizes == 0 and answer.drafts_capped_to is None
    assert backend.calls[0].messages == proposer_messages(FOX)


async def test_a_backend_that_cannot_count_gets_the_drafts_as_asked() -> None:
    backend = ScriptedBackend()
    [answer] = await Pipeline(backend).run(FOX, params(3, 2))
    assert [c.sampling.max_tokens for c in backend.calls] == [4096, 4096, 16]
    assert answer.drafts_capped_to is None and answer.drafts_trimmed == 0
