"""Tools in the pipeline: tool-call turns pass through every round's messages unchanged, a draft that
came back with calls reaches the aggregator as text, and the final answer's calls reach the caller."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

import pytest

from serving.backends.base import (
    Completion,
    Generation,
    Role,
    Sampling,
    StreamDelta,
    ToolCall,
    ToolCallDelta,
    Tools,
    Usage,
)
from serving.errors import ContextLengthExceeded
from serving.format import Message, aggregator_messages, draft_text, proposer_messages
from serving.pipeline import AnswerDelta, AnswerDone, Pipeline, PipelineParams
from tests.fakes import ScriptedBackend

CALL = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
TOOLS = Tools(({"type": "function", "function": {"name": "get_weather"}},), "auto")
TURNS: list[Message] = [
    {"role": "user", "content": "Weather?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
]


class CallingBackend(ScriptedBackend):
    """Every sample calls get_weather; the final answer's call comes whole in the stream's last delta."""

    async def generate(self, role: Role, messages: Sequence[Message], sampling: Sampling, n: int) -> Generation:
        await super().generate(role, messages, sampling, n)
        return Generation([Completion("Checking.", "tool_calls", (CALL,))] * n, Usage(requests=1))

    async def stream(self, role: Role, messages: Sequence[Message],
                     sampling: Sampling) -> AsyncGenerator[StreamDelta, None]:
        async for _ in super().stream(role, messages, sampling):
            pass
        yield StreamDelta("", "tool_calls", Usage(requests=1), (ToolCallDelta(0, CALL.arguments, CALL.id, CALL.name),))


def _params() -> PipelineParams:
    return PipelineParams(2, 1, Sampling(0.7, 0.95, tools=Tools(TOOLS.definitions, "none")),
                          Sampling(0.7, 1.0, tools=TOOLS))


def test_tool_call_turns_reach_both_formats_unchanged() -> None:
    assert proposer_messages(TURNS)[1:] == TURNS
    assert aggregator_messages(TURNS, ["a"])[1:] == TURNS


def test_a_drafts_call_is_text_for_the_aggregator() -> None:
    assert draft_text("Checking.", [("f", '{"x": 1}')]) == 'Checking.\n{"name": "f", "arguments": "{\\"x\\": 1}"}'
    assert draft_text("", [("f", "{}")]) == '{"name": "f", "arguments": "{}"}'


async def test_drafts_calls_are_aggregated_as_text_and_the_final_calls_come_back() -> None:
    backend = CallingBackend()
    [answer] = await Pipeline(backend).run(TURNS, _params())
    assert answer.tool_calls == (CALL,) and answer.finish_reason == "tool_calls"
    proposals, final = backend.calls
    assert proposals.sampling.tools is not None and proposals.sampling.tools.choice == "none"
    assert final.sampling.tools == TOOLS
    assert final.messages[0]["content"].endswith(
        '1. Checking.\n{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}\n2. Checking.'
        '\n{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}')
    assert final.messages[1:] == TURNS


async def test_a_streamed_answer_ends_with_its_calls() -> None:
    events = [event async for event in Pipeline(CallingBackend()).stream(TURNS, _params(), budget=None)]
    done = events[-1]
    assert isinstance(done, AnswerDone)
    assert (done.finish_reason, done.tool_calls) == ("tool_calls", (CALL,))


PIECES = (ToolCallDelta(0, "", "call_1", "get_weather"), ToolCallDelta(0, '{"city": '), ToolCallDelta(0, '"Paris"}'))


class PieceByPieceBackend(CallingBackend):
    """The final answer's call streams as a parser finds it: name first, then its arguments in pieces."""

    async def stream(self, role: Role, messages: Sequence[Message],
                     sampling: Sampling) -> AsyncGenerator[StreamDelta, None]:
        async for _ in ScriptedBackend.stream(self, role, messages, sampling):
            pass
        yield StreamDelta("Checking.")
        for piece in PIECES:
            yield StreamDelta("", tool_calls=(piece,))
        yield StreamDelta("", "tool_calls", Usage(requests=1))


async def test_a_streamed_calls_pieces_pass_through_as_they_come() -> None:
    events = [event async for event in Pipeline(PieceByPieceBackend()).stream(TURNS, _params(), budget=None)]
    deltas = [event for event in events if isinstance(event, AnswerDelta)]
    assert [(d.text, d.tool_calls) for d in deltas] == [("Checking.", ())] + [("", (piece,)) for piece in PIECES]
    done = events[-1]
    assert isinstance(done, AnswerDone) and (done.finish_reason, done.tool_calls) == ("tool_calls", (CALL,))


async def test_the_context_budget_counts_the_tool_definitions() -> None:
    big = Tools(({"type": "function", "function": {"name": "f", "description": "word " * 300}},), "none")
    params = PipelineParams(2, 1, Sampling(0.7, 0.95, max_tokens=50, tools=big), Sampling(0.7, 1.0, tools=big))
    backend = ScriptedBackend(context_length=400)
    with pytest.raises(ContextLengthExceeded):
        await Pipeline(backend).run(TURNS, params)
    assert backend.calls == []  # refused before any generation
    [answer] = await Pipeline(backend).run(TURNS, _params())  # small tools fit
    assert answer.text
