"""Early exit: when enough of a round's drafts agree (identical after whitespace normalisation),
the pipeline stops there and the agreed draft is the answer; no further round, no final aggregation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import pytest

from serving.backends.base import Completion, Generation, ResponseFormat, Role, Sampling, Tools
from serving.early_exit import agreed_draft, normalise
from serving.format import Message
from serving.live_draft import DraftDelta
from serving.pipeline import AnswerDelta, AnswerDone, Event, LayerDone, Pipeline, PipelineParams
from tests.fakes import Call, ScriptedBackend

CONVERSATION: list[Message] = [{"role": "user", "content": "What is 2+2?"}]
SEED = 5
DRAFTS = Sampling(temperature=0.7, top_p=0.95, max_tokens=64, seed=SEED)
FINAL = Sampling(temperature=0.3, top_p=1.0, max_tokens=32, seed=SEED)


def params(proposals: int, rounds: int, early_exit: float | None, *, drafts: Sampling = DRAFTS,
           final: Sampling = FINAL) -> PipelineParams:
    return PipelineParams(proposals, rounds, drafts, final, early_exit=early_exit)


def by_round(table: dict[int, list[str]]) -> Callable[[Call, int], str]:
    """Drafts of each round as scripted (the pipeline seeds round r with SEED + r); the answer otherwise."""
    def reply(call: Call, i: int) -> str:
        assert call.sampling.seed is not None
        drafts = table.get(call.sampling.seed - SEED)
        final = call.sampling.temperature == FINAL.temperature
        return "the aggregated answer" if drafts is None or final else drafts[i]
    return reply


@dataclass
class Finishing(ScriptedBackend):
    """A ScriptedBackend whose drafts end as `finish` says ("stop" or "length")."""

    finish: Callable[[Call, int], str] = lambda call, i: "stop"

    async def generate(self, role: Role, messages: Sequence[Message], sampling: Sampling, n: int) -> Generation:
        call = Call(role, list(messages), sampling, n, False)
        self._record(call)
        await self._wait()
        texts = [self.reply(call, i) for i in range(n)]
        return Generation([Completion(t, self.finish(call, i)) for t, i in zip(texts, range(n), strict=True)],
                          self.usage(call, texts))


def shape(backend: ScriptedBackend) -> list[tuple[str, int]]:
    return [(c.role, c.n) for c in backend.calls]


def test_normalise_strips_and_joins_whitespace() -> None:
    assert normalise("  the\n\tanswer  is\r\n4 ") == "the answer is 4"


@pytest.mark.parametrize(("drafts", "share", "agreed"), [
    (["x", " y", "y ", "x", "y\n"], 0.6, 1),     # three of five agree: the first of them is the answer
    (["x", " y", "y ", "x", "y\n"], 0.61, None),  # 0.61 of five asks for four
    (["x", "y", "z"], 1.0, None),
    (["a b", "a  b", "a\nb"], 1.0, 0),
    (["x", "y", "z", "w", "v"], 0.2, None),       # one draft agrees with nothing
    (["x", "x", "z", "w", "v"], 0.2, 0),
    (["7"] * 7 + ["1", "2", "3"], 0.7, 0),        # 0.7 * 10 is 7.000000000000001 in floats: seven suffice
    (["", "", ""], 1.0, None),                    # empty drafts say nothing
])
def test_agreement_threshold(drafts: list[str], share: float, agreed: int | None) -> None:
    assert agreed_draft([Completion(d, "stop") for d in drafts], share) == agreed


def test_one_draft_never_agrees() -> None:
    assert agreed_draft([Completion("x", "stop")], 1.0) is None


async def test_agreeing_proposals_are_the_answer_at_round_0() -> None:
    backend = ScriptedBackend(reply=by_round({0: ["the answer\n", " the  answer", "the answer"]}))
    [answer] = await Pipeline(backend).run(CONVERSATION, params(3, 2, 1.0))
    assert shape(backend) == [("proposer", 3)]
    assert answer.text == "the answer\n"  # the first agreeing draft, as generated
    assert (answer.early_exit_round, answer.finish_reason) == (0, "stop")
    assert [layer.round for layer in answer.layers] == [0]
    assert len(answer.usage_by_round) == len(answer.seconds_by_round) == 1
    assert answer.usage == answer.usage_by_round[0]


async def test_agreeing_aggregations_are_the_answer_at_an_intermediate_round() -> None:
    backend = ScriptedBackend(reply=by_round({0: ["1", "2", "3"], 1: ["4", "5", "4"], 2: ["6", "6", "6"]}))
    [answer] = await Pipeline(backend).run(CONVERSATION, params(3, 4, 1.0))
    assert shape(backend) == [("proposer", 3), ("aggregator", 3), ("aggregator", 3)]
    assert (answer.text, answer.early_exit_round) == ("6", 2)
    assert len(answer.usage_by_round) == 3 and answer.usage.requests == 3


async def test_off_by_default_and_when_drafts_disagree() -> None:
    backend = ScriptedBackend(reply=by_round({0: ["4", "4", "4"]}))
    [answer] = await Pipeline(backend).run(CONVERSATION, params(3, 1, None))
    assert shape(backend) == [("proposer", 3), ("aggregator", 1)]
    assert answer.early_exit_round is None and answer.text == "the aggregated answer"
    backend = ScriptedBackend(reply=by_round({0: ["4", "5", "4"]}))
    [answer] = await Pipeline(backend).run(CONVERSATION, params(3, 1, 1.0))
    assert answer.early_exit_round is None and len(backend.calls) == 2


async def test_drafts_cut_by_max_tokens_do_not_agree() -> None:
    backend = Finishing(reply=by_round({0: ["4 4 4"] * 3}), finish=lambda call, i: "length" if i == 2 else "stop")
    [answer] = await Pipeline(backend).run(CONVERSATION, params(3, 1, 1.0))
    assert answer.early_exit_round is None and shape(backend) == [("proposer", 3), ("aggregator", 1)]
    backend = Finishing(reply=by_round({0: ["4 4 4"] * 3}), finish=lambda call, i: "length" if i == 0 else "stop")
    [answer] = await Pipeline(backend).run(CONVERSATION, params(3, 1, 0.6))
    assert answer.early_exit_round == 0 and shape(backend) == [("proposer", 3)]


async def test_requests_with_tools_never_exit_early() -> None:
    tools = Tools(({"type": "function", "function": {"name": "add"}},), "none")
    backend = ScriptedBackend(reply=by_round({0: ["4", "4", "4"]}))
    with_tools = params(3, 1, 1.0, drafts=Sampling(0.7, 0.95, seed=SEED, tools=tools),
                        final=Sampling(0.3, 1.0, seed=SEED, tools=Tools(tools.definitions, "auto")))
    [answer] = await Pipeline(backend).run(CONVERSATION, with_tools)
    assert answer.early_exit_round is None and shape(backend) == [("proposer", 3), ("aggregator", 1)]


JSON = ResponseFormat("json_schema", {"type": "object", "required": ["x"]}, "answer")


def test_json_drafts_agree_as_values_not_bytes() -> None:
    drafts = ['{"x": 1, "b": [true]}', '{"b":[true],"x":1}', '{"x": 1, "b": [1]}', "not json", "not json"]
    completions = [Completion(text, "stop") for text in drafts]
    assert agreed_draft(completions, 0.4, answer_format=JSON) == 0  # key order and spacing do not matter
    # true is not 1, and text that is no JSON agrees with nothing
    assert agreed_draft(completions[2:], 0.5, answer_format=JSON) is None
    assert agreed_draft(completions[2:], 0.5) == 1  # as text, the two non-JSON drafts agree


def test_json_drafts_the_schema_refuses_agree_with_nothing() -> None:
    completions = [Completion('{"y": 4}', "stop")] * 3
    assert agreed_draft(completions, 1.0, answer_format=JSON) is None
    assert agreed_draft(completions, 1.0, answer_format=ResponseFormat("json_object")) == 0


@pytest.mark.parametrize("constrained", [True, False])
async def test_json_drafts_exit_early_constrained_or_free(constrained: bool) -> None:
    # Free drafts that happen to be valid JSON are answers like constrained ones.
    backend = ScriptedBackend(reply=by_round({0: ['{"x": 4}', '{ "x" : 4 }', '{"x":4}']}))
    drafts = replace(DRAFTS, response_format=JSON if constrained else None)
    [answer] = await Pipeline(backend).run(CONVERSATION, params(3, 1, 1.0, drafts=drafts,
                                                                final=replace(FINAL, response_format=JSON)))
    assert (answer.text, answer.early_exit_round) == ('{"x": 4}', 0) and shape(backend) == [("proposer", 3)]


async def test_prose_drafts_never_exit_a_json_request_early() -> None:
    backend = ScriptedBackend(reply=by_round({0: ["four", "four", "four"]}))
    [answer] = await Pipeline(backend).run(CONVERSATION, params(3, 1, 1.0, final=replace(FINAL, response_format=JSON)))
    assert answer.early_exit_round is None and shape(backend) == [("proposer", 3), ("aggregator", 1)]


async def test_greedy_drafts_agree() -> None:
    # Greedy drafts are one sample repeated: they agree by construction.
    backend = ScriptedBackend(reply=lambda call, i: "four")
    [answer] = await Pipeline(backend).run(CONVERSATION, params(4, 2, 1.0, drafts=Sampling(0.0, 1.0)))
    assert (answer.text, answer.early_exit_round) == ("four", 0) and shape(backend) == [("proposer", 1)]


async def collect(pipeline: Pipeline, p: PipelineParams, *, n: int = 1, live: bool = False) -> list[Event]:
    return [event async for event in pipeline.stream(CONVERSATION, p, n=n, live_drafts=live)]


async def test_streamed_early_exit_is_an_answer_like_any_other() -> None:
    backend = ScriptedBackend(reply=by_round({0: ["1", "2", "3"], 1: ["two words", "two  words", "other"]}))
    events = await collect(Pipeline(backend), params(3, 3, 0.6))
    assert shape(backend) == [("proposer", 3), ("aggregator", 3)]
    assert "".join(e.text for e in events if isinstance(e, AnswerDelta)) == "two words"
    assert [e.layer.round for e in events if isinstance(e, LayerDone)] == [0, 1]
    [done] = [e for e in events if isinstance(e, AnswerDone)]
    assert events[-1] is done
    assert (done.early_exit_round, done.finish_reason) == (1, "stop")
    assert len(done.usage_by_round) == len(done.seconds_by_round) == 2 and done.usage.requests == 2


async def test_streamed_with_live_drafts_the_drafts_come_first() -> None:
    # The live draft's request and the others' have different seeds: the reply goes by role.
    backend = ScriptedBackend(reply=lambda call, i: "same" if call.role == "proposer" else "aggregated")
    events = await collect(Pipeline(backend), params(3, 2, 1.0), live=True)
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("AnswerDelta") > max(i for i, k in enumerate(kinds) if k == "DraftDelta")
    assert sorted(e.draft for e in events if isinstance(e, DraftDelta)) == [0, 1, 2]
    assert next(e for e in events if isinstance(e, AnswerDone)).early_exit_round == 0


async def test_each_answer_exits_on_its_own() -> None:
    # Answer 0's round is seeded SEED + r, answer 1's SEED + 1_000_003 + r: only answer 0's drafts agree.
    def reply(call: Call, i: int) -> str:
        if call.sampling.seed == SEED:
            return "agreed"
        return "the aggregated answer" if call.role == "aggregator" else f"draft {i}"
    backend = ScriptedBackend(reply=reply)
    answers = await Pipeline(backend).run(CONVERSATION, params(3, 1, 1.0), n=2)
    assert [(a.text, a.early_exit_round) for a in answers] == [("agreed", 0), ("the aggregated answer", None)]
    backend = ScriptedBackend(reply=reply)
    events = await collect(Pipeline(backend), params(3, 1, 1.0), n=2)
    done = sorted((e for e in events if isinstance(e, AnswerDone)), key=lambda e: e.index)
    assert [d.early_exit_round for d in done] == [0, None]
