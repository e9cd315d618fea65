"""The context budget: how long drafts may be so that every prompt of a pipeline fits the model.

Every round after the first aggregates the N drafts of the round before in ONE prompt: the
aggregation template, the client's conversation and the drafts. Before any draft is generated,
that prompt is counted once without its drafts (A tokens: N empty numbered entries), and every
draft's max_tokens is capped at D so that, with C the context length,

    A + N * D + F <= C    the final aggregation: N drafts and the answer's F tokens
    A + N * D + D <= C    an intermediate aggregation: N drafts in, drafts of D tokens out

With subset aggregation (K < N, serving/subset.py) every aggregation prompt holds K drafts, not N:
K takes N's place above, so N may grow past what one prompt holds.

F is the request's max_tokens for the answer. Without one the answer is reserved one draft's
length (F = D; an answer aggregates drafts) and gets whatever else fits, as the backend clamps
it to the context. The proposer prompt is counted too (the proposer may be another model):
P + D <= its context. These counts are made once per request, for all its answers.

When D would fall below `min_draft_tokens` (or below the drafts' own max_tokens when they asked
for fewer), the request is refused with ContextLengthExceeded, naming the numbers, before any
generation: drafts that short are not worth aggregating.

Drafts enter the prompt as text, and their text can take more tokens than were generated (BPE
merges across the numbered list; bytes of a cut character decoded to U+FFFD). So each
aggregation prompt is counted before it is sent, and when it does not leave room for its
output, the longest drafts are cut and the prompt is counted again until it does (`fit_drafts`);
the drafts cut are reported.

Counting costs an upstream a /tokenize round trip, so a prompt is counted only when a cheap bound
does not already prove it fits: the prompt without drafts (counted when the budget was planned)
plus one token per byte of the drafts' text (no token of byte-level BPE or of SentencePiece with
byte fallback holds less than a byte) plus a few tokens per draft where its text meets the list's
own (`_BOUNDARY_TOKENS`). The bound holds for chat templates that write the message holding the drafts
(the system message, or conversation-first's last user message) once and as it is, which is what every
template does that the aggregation format is served with.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

from serving.backends.base import Backend, Tools
from serving.errors import ContextLengthExceeded
from serving.format import AggregationFormat, Message, aggregator_messages, proposer_messages

logger = logging.getLogger(__name__)

_CUT_TRIES = 4
"""Cut-and-count rounds before the drafts are dropped altogether (the prompt without them fits)."""

_BOUNDARY_TOKENS = 8
"""Tokens a draft may add beyond its bytes: at either end, the list's text next to it ("2. ",
a newline) may be split differently once the draft is there."""


@dataclass(frozen=True)
class DraftBudget:
    """What the context allows each draft of one request."""

    draft_max_tokens: int
    """Every draft's max_tokens (proposals and intermediate aggregations)."""
    capped: bool
    """True when that is less than the drafts asked for (or they set no limit)."""
    base_tokens: int
    """The aggregation prompt without its drafts."""
    context_length: int
    """The aggregator's context."""
    answer_tokens: int
    """Reserved for the final answer: its max_tokens, or one draft's length."""

    def room(self, final: bool) -> int:
        """The most tokens an aggregation prompt may take: the final one, or an intermediate one."""
        return self.context_length - (self.answer_tokens if final else self.draft_max_tokens)


async def plan_drafts(backend: Backend, conversation: Sequence[Message], proposals: int,
                      draft_max_tokens: int | None, answer_max_tokens: int | None, *, rounds: int,
                      min_draft_tokens: int, tools: Tools | None = None,
                      subset: int | None = None, fmt: AggregationFormat = AggregationFormat.PAPER,
                      ) -> DraftBudget | None:
    """The drafts' budget for this conversation, or None when there are no drafts (rounds = 0)
    or the backend cannot count. `subset`: K, the drafts each aggregation reads (None: all N);
    `fmt`: the aggregation prompt's layout.
    Raises ContextLengthExceeded when not even a small draft fits."""
    if rounds == 0:
        return None
    per_prompt = proposals if subset is None else min(subset, proposals)
    aggregator = await backend.prompt_size("aggregator", aggregator_messages(conversation, [""] * per_prompt, fmt),
                                           tools)
    if aggregator is None:
        return None
    proposer = await backend.prompt_size("proposer", proposer_messages(conversation), tools)
    if proposer is None:
        return None
    base, context = aggregator.tokens, aggregator.context_length
    free = context - base
    # K drafts and the answer; with no answer size given, or an intermediate round, K + 1 drafts.
    per_draft = free // (per_prompt + 1)
    if answer_max_tokens is not None:
        by_answer = (free - answer_max_tokens) // per_prompt
        per_draft = by_answer if rounds == 1 else min(per_draft, by_answer)
    by_proposer = proposer.context_length - proposer.tokens
    draft = min(per_draft, by_proposer)
    floor = min_draft_tokens if draft_max_tokens is None else min(min_draft_tokens, draft_max_tokens)
    if draft < floor:
        if by_proposer < per_draft:
            raise ContextLengthExceeded(
                f"The prompt has {proposer.tokens} tokens; the model's context length is "
                f"{proposer.context_length}, which leaves {max(by_proposer, 0)} tokens for each draft, "
                f"below the minimum of {floor}. Shorten the conversation.")
        answer = (f"the answer takes up to {answer_max_tokens} tokens (max_tokens)"
                  if answer_max_tokens is not None else "the answer is reserved one draft's length")
        left = free - (answer_max_tokens or 0)
        advice = "lower max_tokens, " if answer_max_tokens is not None else ""
        raise ContextLengthExceeded(
            f"The conversation leaves no room for drafts: the aggregation prompt has {base} tokens "
            f"before its {per_prompt} drafts, the model's context length is {context}, and {answer}; "
            f"that leaves {max(left, 0)} tokens, {max(draft, 0)} per draft, below the minimum of {floor}. "
            f"Shorten the conversation, {advice}or aggregate fewer drafts at once (aft.proposals, "
            f"or aft.subset).")
    if draft_max_tokens is not None and draft_max_tokens <= draft:
        return DraftBudget(draft_max_tokens, False, base, context, answer_max_tokens or draft_max_tokens)
    return DraftBudget(draft, True, base, context, answer_max_tokens or draft)


async def fit_drafts(backend: Backend, conversation: Sequence[Message], drafts: list[str],
                     budget: DraftBudget, *, final: bool, tools: Tools | None = None,
                     fmt: AggregationFormat = AggregationFormat.PAPER) -> tuple[list[str], int]:
    """The drafts, cut where needed so that their aggregation prompt (in layout `fmt`) leaves room
    for its output, and how many were cut."""
    room = budget.room(final)
    if budget.base_tokens + _most_tokens(drafts) <= room:
        return drafts, 0
    tokens = await _count(backend, conversation, drafts, tools, fmt)
    if tokens <= room:
        return drafts, 0
    logger.info("aggregation prompt of %d tokens over its room of %d: cutting its drafts", tokens, room)
    fitted = drafts
    for _ in range(_CUT_TRIES):
        # Cut characters in proportion to the excess tokens, a tenth more so one pass usually does.
        in_drafts = max(tokens - budget.base_tokens, 1)
        excess = math.ceil((tokens - room) * 1.1 * sum(len(d) for d in fitted) / in_drafts) + 1
        fitted = _shorten(fitted, excess)
        tokens = await _count(backend, conversation, fitted, tools, fmt)
        if tokens <= room:
            return fitted, sum(a != b for a, b in zip(drafts, fitted, strict=True))
    return [""] * len(drafts), sum(1 for d in drafts if d)


def _most_tokens(drafts: Sequence[str]) -> int:
    """An upper bound on the tokens `drafts` add to the aggregation prompt counted without them."""
    return sum(len(d) if d.isascii() else len(d.encode()) for d in drafts) + _BOUNDARY_TOKENS * len(drafts)


async def _count(backend: Backend, conversation: Sequence[Message], drafts: Sequence[str],
                 tools: Tools | None, fmt: AggregationFormat) -> int:
    size = await backend.prompt_size("aggregator", aggregator_messages(conversation, drafts, fmt), tools)
    assert size is not None  # the budget exists because this backend counts
    return size.tokens


def _shorten(drafts: Sequence[str], chars: int) -> list[str]:
    """`drafts` with `chars` characters (or more) cut from the ends of the longest: the longest are
    cut down to one common length, so short drafts keep all they say."""
    if chars <= 0 or not drafts:
        return list(drafts)
    lengths = sorted((len(d) for d in drafts), reverse=True)
    level, cut = lengths[0], 0
    for i, length in enumerate(lengths):
        # Bring the i longest drafts down from `level` to this draft's length.
        step = (level - length) * i
        if cut + step >= chars:
            level -= math.ceil((chars - cut) / i)
            break
        cut += step
        level = length
    else:
        level = max(level - math.ceil((chars - cut) / len(lengths)), 0)
    return [d[:max(level, 0)] for d in drafts]
