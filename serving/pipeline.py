"""Propose-and-aggregate: N proposals, (rounds - 1) intermediate aggregation layers, one final answer.

Round 0 samples N proposals with the proposer format. Each intermediate round
samples N aggregations, every one seeing all N outputs of the round before; the
final round samples one aggregation, which is the answer. Every layer whose
samples share one prompt is ONE backend request with n = N, so the samples share
the prompt's KV cache. rounds = 0 is plain generation (one proposer call, N
ignored); N = 1 with rounds >= 1 is sequential self-refinement.

With `subset` K < N every aggregation reads its own random K of the N outputs before it
(serving/subset.py): an intermediate round is then N requests of one sample. With `early_exit`
a round whose drafts agree ends the pipeline: the agreed draft is the answer (serving/early_exit.py).

With `live_drafts` a stream also yields every draft's text (DraftDelta) before the answer: the
first draft of round 0 token by token as ONE streamed request, while the other N - 1 run as one
request with n = N - 1 on the same prompt (serving/live_draft.py); then those N - 1 drafts, then
each intermediate round's drafts as the round ends.

Drafts are capped so that every prompt fits the model's context (serving/budget.py): the caps
are planned once per request, before any generation, and a request with no room for drafts is
refused then; each aggregation prompt is counted before it is sent and its drafts are cut when
their text came out longer in tokens than generated. Answers report the cap and the cuts.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace

from serving.backends.base import (
    Backend,
    Completion,
    Generation,
    Role,
    Sampling,
    StreamDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    joined_calls,
)
from serving.budget import DraftBudget, fit_drafts, plan_drafts
from serving.concurrency import all_or_first_error
from serving.early_exit import AGREEING_FINISH, agreed_draft
from serving.format import AggregationFormat, Message, aggregator_messages, draft_text, proposer_messages
from serving.live_draft import DraftDelta, live_round
from serving.merge import merge_streams
from serving.subset import aggregate_subsets, pick_subsets


@dataclass(frozen=True)
class PipelineParams:
    """How one answer is produced."""

    proposals: int
    rounds: int
    draft_sampling: Sampling
    """Sampling of round 0 and the intermediate rounds (reference: temperature 0.7, top_p 0.95)."""
    final_sampling: Sampling
    """Sampling of the final answer (reference: temperature 0.7, top_p 1.0)."""
    early_exit: float | None = None
    """Stop after a round whose drafts agree: the share of the N drafts (0 < x <= 1; 1.0 is "all")
    that must be identical after whitespace normalisation; the agreed draft is the answer. None: off."""
    subset: int | None = None
    """K: every aggregation reads a random K of the round before's N outputs (Recursive
    Self-Aggregation). None (or K >= N) reads all N, the paper's AFT."""


@dataclass
class Layer:
    """The outputs of one round of drafts and what the round cost."""

    round: int
    outputs: list[str]
    """What the next round was given: drafts cut to fit its prompt are cut here too."""
    usage: Usage
    trimmed: int = 0
    """Outputs cut so that the next round's prompt fits the context."""
    drafts: list[str] = field(default_factory=list)
    """The round's drafts as generated, before any cut (what a reader of the reasoning sees)."""
    seconds: float = 0.0
    """How long the round took, from its request to its outputs fitted."""
    subsets: list[list[str]] | None = None
    """With subset aggregation (K < N): the K outputs each aggregation of the next round reads, cut
    to fit its prompt (then `outputs` are the drafts as generated). None: each reads all `outputs`."""
    agreed: int | None = None
    """The draft the round's drafts agreed on (early exit): the answer; no round follows."""


@dataclass
class LayerDone:
    """Event: a round of drafts finished (its outputs feed the next round)."""

    index: int
    layer: Layer


@dataclass
class AnswerDelta:
    """Event: the next piece of answer `index`: more of its text, or pieces of the tool calls it
    makes (each call's index, id and name first, then its arguments piece by piece; see ToolCallDelta)."""

    index: int
    text: str
    tool_calls: tuple[ToolCallDelta, ...] = ()


@dataclass
class AnswerDone:
    """Event: answer `index` ended; usage covers every round of its pipeline."""

    index: int
    finish_reason: str | None
    usage: Usage
    usage_by_round: list[Usage]
    drafts_capped_to: int | None = None
    """The drafts' max_tokens when the context budget lowered it; None when they had what they asked."""
    drafts_trimmed: int = 0
    """Drafts cut so that an aggregation prompt fits the context (all rounds)."""
    tool_calls: tuple[ToolCall, ...] = ()
    """The calls the final answer made (finish_reason "tool_calls")."""
    seconds_by_round: list[float] = field(default_factory=list)
    """How long each round took, the final answer last (as usage_by_round)."""
    early_exit_round: int | None = None
    """The round whose agreeing drafts became the answer (no final aggregation ran); None otherwise."""


Event = LayerDone | DraftDelta | AnswerDelta | AnswerDone


@dataclass
class Answer:
    """A finished answer with the drafts it was made from."""

    index: int
    text: str
    finish_reason: str | None
    layers: list[Layer]
    usage: Usage
    usage_by_round: list[Usage]
    drafts_capped_to: int | None = None
    """The drafts' max_tokens when the context budget lowered it; None when they had what they asked."""
    drafts_trimmed: int = 0
    """Drafts cut so that an aggregation prompt fits the context (all rounds)."""
    tool_calls: tuple[ToolCall, ...] = ()
    """The calls the final answer made (finish_reason "tool_calls")."""
    seconds_by_round: list[float] = field(default_factory=list)
    """How long each round took, the final answer last (as usage_by_round)."""
    early_exit_round: int | None = None
    """The round whose agreeing drafts became the answer (no final aggregation ran); None otherwise."""


def _draft(completion: Completion) -> str:
    if not completion.tool_calls:
        return completion.text
    return draft_text(completion.text, [(call.name, call.arguments) for call in completion.tool_calls])


def _budget_report(budget: DraftBudget | None, layers: list[Layer]) -> tuple[int | None, int]:
    capped_to = budget.draft_max_tokens if budget is not None and budget.capped else None
    return capped_to, sum(layer.trimmed for layer in layers)


def _seconds(layers: list[Layer], final: float | None) -> list[float]:
    return [layer.seconds for layer in layers] + ([] if final is None else [final])


def _total(by_round: list[Usage]) -> Usage:
    total = Usage()
    for usage in by_round:
        total.add(usage)
    return total


def _early_answer(index: int, layers: list[Layer], budget: DraftBudget | None) -> Answer | None:
    """The answer when the last round's drafts agreed (early exit): the draft they agreed on, with no
    final aggregation. None when they did not."""
    last = layers[-1] if layers else None
    if last is None or last.agreed is None:
        return None
    by_round = [layer.usage for layer in layers]
    return Answer(index, last.drafts[last.agreed], AGREEING_FINISH, layers, _total(by_round), by_round,
                  *_budget_report(budget, layers), seconds_by_round=_seconds(layers, None),
                  early_exit_round=last.round)


def _done(answer: Answer) -> AnswerDone:
    """The event that ends a streamed answer which is already complete."""
    return AnswerDone(answer.index, answer.finish_reason, answer.usage, answer.usage_by_round,
                      answer.drafts_capped_to, answer.drafts_trimmed, answer.tool_calls, answer.seconds_by_round,
                      answer.early_exit_round)


def _seeded(sampling: Sampling, index: int, round_: int) -> Sampling:
    # One client seed makes the whole pipeline reproducible while still giving each
    # answer and round its own stream of randomness.
    if sampling.seed is None:
        return sampling
    return replace(sampling, seed=sampling.seed + 1_000_003 * index + round_)


class Pipeline:
    """Runs propose-and-aggregate on a backend. Knows nothing of HTTP."""

    def __init__(self, backend: Backend, *, min_draft_tokens: int = 32,
                 aggregation_format: AggregationFormat = AggregationFormat.PAPER) -> None:
        self.backend = backend
        self.min_draft_tokens = min_draft_tokens
        """The shortest drafts worth aggregating: a request leaving less room is refused."""
        self.format = aggregation_format
        """The aggregation prompts' layout: the one the aggregator was trained on (aft.json's format)."""

    async def plan(self, conversation: Sequence[Message], params: PipelineParams) -> DraftBudget | None:
        """The drafts' context budget (None: no drafts, or a backend that cannot count tokens).
        Raises ContextLengthExceeded, before any generation, when not even short drafts fit, and
        InvalidRequest when the backend cannot honour the answer's or the drafts' sampling (a schema)."""
        await self.backend.check_sampling(params.final_sampling)
        if params.rounds and params.draft_sampling.response_format is not None:
            await self.backend.check_sampling(params.draft_sampling)
        return await plan_drafts(self.backend, conversation, params.proposals, params.draft_sampling.max_tokens,
                                 params.final_sampling.max_tokens, rounds=params.rounds,
                                 min_draft_tokens=self.min_draft_tokens, tools=params.draft_sampling.tools,
                                 subset=params.subset, fmt=self.format)

    async def _drafts(self, conversation: Sequence[Message], params: PipelineParams, index: int,
                      budget: DraftBudget | None, *, live: bool = False) -> AsyncGenerator[DraftDelta | Layer, None]:
        """Each round's Layer; with `live`, each draft's text first (round 0's first draft as it is made)."""
        draft_sampling = params.draft_sampling
        if budget is not None:
            draft_sampling = replace(draft_sampling, max_tokens=budget.draft_max_tokens)
        # Only the final answer may call a tool: a request with tools always runs to it. JSON drafts
        # compare as values, and only those the answer's format allows can be the answer.
        final = params.final_sampling
        share = params.early_exit if draft_sampling.tools is None and final.tools is None else None
        before: Layer | None = None
        for round_ in range(params.rounds):
            sampling = _seeded(draft_sampling, index, round_)
            start = time.perf_counter()
            streamed = live and round_ == 0
            if before is not None and before.subsets is not None:
                generation = await aggregate_subsets(self.backend, conversation, before.subsets, sampling, self.format)
                completions = generation.completions
            else:
                role: Role = "proposer" if before is None else "aggregator"
                messages = (proposer_messages(conversation) if before is None
                            else aggregator_messages(conversation, before.outputs, self.format))
                # Greedy samples are all the same, and vLLM refuses n > 1 without sampling:
                # generate one and repeat it (usage counts the tokens once, as they were spent).
                copies = params.proposals if sampling.temperature == 0 else 1
                if streamed:
                    generation = Generation([])
                    async with aclosing(live_round(self.backend, role, messages, sampling, index,
                                                   params.proposals // copies)) as pieces:
                        async for piece in pieces:
                            if isinstance(piece, DraftDelta):
                                yield piece
                            else:
                                generation = piece
                else:
                    generation = await self.backend.generate(role, messages, sampling, n=params.proposals // copies)
                completions = generation.completions * copies
            drafts = [_draft(c) for c in completions]
            if live:
                for number, text in enumerate(drafts[1:] if streamed else drafts, 1 if streamed else 0):
                    yield DraftDelta(index, round_, number, text)
            agreed = (agreed_draft(completions, share, answer_format=final.response_format)
                      if share is not None else None)
            if agreed is not None:
                yield Layer(round_, drafts, generation.usage, 0, drafts, time.perf_counter() - start, agreed=agreed)
                return
            outputs, subsets, trimmed = await self._inputs(conversation, params, index, round_ + 1, drafts, budget)
            before = Layer(round_, outputs, generation.usage, trimmed, drafts, time.perf_counter() - start, subsets)
            yield before

    async def _inputs(self, conversation: Sequence[Message], params: PipelineParams, index: int, round_: int,
                      drafts: list[str], budget: DraftBudget | None) -> tuple[list[str], list[list[str]] | None, int]:
        """What round `round_` reads of the drafts before it: (outputs, subsets, drafts cut). Each
        aggregation's drafts are cut, when needed, to fit its prompt."""
        final = round_ == params.rounds
        subsets = pick_subsets(drafts, params.subset, 1 if final else params.proposals,
                               seed=params.draft_sampling.seed, index=index, round_=round_)
        if budget is None:
            return drafts, subsets, 0
        tools = params.draft_sampling.tools
        if subsets is None:
            outputs, trimmed = await fit_drafts(self.backend, conversation, drafts, budget, final=final, tools=tools,
                                                 fmt=self.format)
            return outputs, None, trimmed
        # Each prompt is counted on its own (an upstream's /tokenize round trip): all at once.
        fitted = await all_or_first_error(fit_drafts(self.backend, conversation, subset, budget, final=final,
                                                     tools=tools, fmt=self.format) for subset in subsets)
        return drafts, [subset for subset, _ in fitted], sum(trimmed for _, trimmed in fitted)

    def _final_call(self, conversation: Sequence[Message], layers: list[Layer]) -> tuple[Role, list[Message]]:
        if not layers:
            return "proposer", proposer_messages(conversation)
        last = layers[-1]
        return "aggregator", aggregator_messages(conversation, last.outputs if last.subsets is None
                                                 else last.subsets[0], self.format)

    def stream(self, conversation: Sequence[Message], params: PipelineParams, *, budget: DraftBudget | None,
               n: int = 1, live_drafts: bool = False) -> AsyncGenerator[Event, None]:
        """Run `n` independent pipelines; yield their events as they happen, answers token by token.

        `budget` is `plan`'s result, awaited first, so that a request is refused before its stream starts.
        Close the generator when stopping early: that closes the backend's stream at once, so it
        aborts its request now rather than whenever the generator is collected.
        With `live_drafts`, every draft's text comes too (DraftDelta), before its round's LayerDone."""
        # The generator itself, not a wrapper re-yielding it: every token passes through as few layers as can be.
        if n == 1:
            return self._stream_one(conversation, params, 0, budget, live_drafts)
        return merge_streams([self._stream_one(conversation, params, i, budget, live_drafts) for i in range(n)])

    async def _stream_one(self, conversation: Sequence[Message], params: PipelineParams, index: int,
                          budget: DraftBudget | None, live_drafts: bool) -> AsyncGenerator[Event, None]:
        layers: list[Layer] = []
        async with aclosing(self._drafts(conversation, params, index, budget, live=live_drafts)) as drafts:
            async for item in drafts:
                if isinstance(item, DraftDelta):
                    yield item
                    continue
                layers.append(item)
                yield LayerDone(index, item)
        early = _early_answer(index, layers, budget)
        if early is not None:
            if early.text:
                yield AnswerDelta(index, early.text)
            yield _done(early)
            return
        role, messages = self._final_call(conversation, layers)
        sampling = _seeded(params.final_sampling, index, params.rounds)
        last: StreamDelta | None = None
        calls: list[ToolCallDelta] = []
        start = time.perf_counter()
        async with aclosing(self.backend.stream(role, messages, sampling)) as deltas:
            async for delta in deltas:
                if delta.tool_calls:
                    yield AnswerDelta(index, delta.text, delta.tool_calls)
                    calls.extend(delta.tool_calls)
                elif delta.text:
                    yield AnswerDelta(index, delta.text)
                last = delta
        final_usage = (last.usage if last and last.usage else Usage(requests=1))
        by_round = [layer.usage for layer in layers] + [final_usage]
        yield AnswerDone(index, last.finish_reason if last else None, _total(by_round), by_round,
                         *_budget_report(budget, layers), tool_calls=joined_calls(calls),
                         seconds_by_round=_seconds(layers, time.perf_counter() - start))

    async def run(self, conversation: Sequence[Message], params: PipelineParams, *,
                  n: int = 1) -> list[Answer]:
        """Run `n` independent pipelines concurrently and return their answers in order.
        The first failure cancels the other pipelines and is raised as it is; a request with no
        room for drafts is refused (ContextLengthExceeded) before any generation."""
        budget = await self.plan(conversation, params)
        if n == 1:
            return [await self._run_one(conversation, params, 0, budget)]
        return await all_or_first_error(self._run_one(conversation, params, i, budget) for i in range(n))

    async def _run_one(self, conversation: Sequence[Message], params: PipelineParams, index: int,
                       budget: DraftBudget | None) -> Answer:
        async with aclosing(self._drafts(conversation, params, index, budget)) as drafts:
            layers = [layer async for layer in drafts if isinstance(layer, Layer)]
        early = _early_answer(index, layers, budget)
        if early is not None:
            return early
        role, messages = self._final_call(conversation, layers)
        sampling = _seeded(params.final_sampling, index, params.rounds)
        start = time.perf_counter()
        generation = await self.backend.generate(role, messages, sampling, n=1)
        final_seconds = time.perf_counter() - start
        completion = generation.completions[0]
        by_round = [layer.usage for layer in layers] + [generation.usage]
        return Answer(index, completion.text, completion.finish_reason, layers, _total(by_round), by_round,
                      *_budget_report(budget, layers), tool_calls=completion.tool_calls,
                      seconds_by_round=_seconds(layers, final_seconds))
