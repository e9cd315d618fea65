"""Subset aggregation (Recursive Self-Aggregation, arXiv 2509.26626): every aggregation reads a
random K of the round before's N outputs, each aggregation its own K, so N can grow past what one
aggregation prompt holds. K >= N reads all N: the paper's AFT, one request with n = N per round.

With K < N the N aggregations of an intermediate round have N different prompts: N requests of one
sample each, sent together. A seeded request picks the same subsets every time: the picks come
from a generator seeded by the client's seed, the answer and the round; an unseeded one picks anew.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace

from serving.backends.base import Backend, Completion, Generation, Sampling, Usage
from serving.concurrency import all_or_first_error
from serving.format import AggregationFormat, Message, aggregator_messages

SUBSET_SEED_STEP = 2_003
"""Added to the round's seed once per aggregation of a subset round, so that N requests on different
prompts do not share one stream of randomness: more than live drafts' offset (serving/live_draft.py)
plus any round count, and times any N a server allows (below 499) less than what the pipeline adds
per answer."""


def _subset_rng(seed: int | None, index: int, round_: int) -> random.Random:
    """The generator that picks round `round_`'s subsets for answer `index`."""
    if seed is None:
        return random.Random()
    return random.Random(f"aft-subset:{seed}:{index}:{round_}")


def pick_subsets(outputs: Sequence[str], k: int | None, count: int, *, seed: int | None, index: int,
                 round_: int) -> list[list[str]] | None:
    """`count` subsets of K distinct outputs each (in the outputs' order), one per aggregation of
    round `round_` of answer `index`; None when K is unset or K >= N: every aggregation reads all
    outputs (and no generator is made: an unseeded one reads the OS's entropy, a cost per round)."""
    if k is None or k >= len(outputs):
        return None
    rng = _subset_rng(seed, index, round_)
    return [[outputs[i] for i in sorted(rng.sample(range(len(outputs)), k))] for _ in range(count)]


async def aggregate_subsets(backend: Backend, conversation: Sequence[Message], subsets: Sequence[Sequence[str]],
                            sampling: Sampling, fmt: AggregationFormat = AggregationFormat.PAPER) -> Generation:
    """One sample aggregating each subset (prompts in layout `fmt`), all requested at once; their
    completions in order and their usage summed. The first failure cancels the other requests and is raised as it is."""
    def seeded(number: int) -> Sampling:
        return sampling if sampling.seed is None else replace(sampling, seed=sampling.seed + SUBSET_SEED_STEP * number)

    generations = await all_or_first_error(
        backend.generate("aggregator", aggregator_messages(conversation, subset, fmt), seeded(number), n=1)
        for number, subset in enumerate(subsets))
    completions: list[Completion] = []
    usage = Usage()
    for generation in generations:
        completions.extend(generation.completions)
        usage.add(generation.usage)
    return Generation(completions, usage)
