"""Round 0 with its first draft streamed: the first visible token of a propose-and-aggregate answer
comes as soon as a plain generation's would.

The first draft is ONE streamed request; the other n - 1 are ONE request with n = n - 1 on the same
prompt, running alongside (an engine with prefix caching computes the shared prompt once). With a
seed, the two requests get different seeds: one seed would make them repeat the same sample.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace

from serving.backends.base import Backend, Completion, Generation, Role, Sampling, StreamDelta, Usage
from serving.format import Message
from serving.merge import merge_streams

SPLIT_SEED_OFFSET = 1_009
"""Added to the seed of the other drafts' request: more than any round count (the pipeline adds the
round to the seed), less than what it adds per answer, so no two requests of a pipeline share one."""


@dataclass
class DraftDelta:
    """Event: the next piece of draft `draft` (from 0) of round `round` of answer `index`. A draft
    that streams live comes in many pieces; one that does not, in one piece (its whole text)."""

    index: int
    round: int
    draft: int
    text: str


async def live_round(backend: Backend, role: Role, messages: Sequence[Message], sampling: Sampling, index: int,
                     n: int) -> AsyncGenerator[DraftDelta | Generation, None]:
    """The first draft's pieces as they come (answer `index`, round 0), then the round's Generation:
    all n drafts, the first one first, and the usage of both requests. The first failure of either
    request cancels the other and is raised; closing this generator aborts both."""
    others_sampling = sampling if sampling.seed is None else replace(sampling, seed=sampling.seed + SPLIT_SEED_OFFSET)

    async def others() -> AsyncGenerator[Generation, None]:
        yield await backend.generate(role, messages, others_sampling, n=n - 1)

    sources: list[AsyncGenerator[StreamDelta | Generation, None]] = [backend.stream(role, messages, sampling)]
    if n > 1:
        sources.append(others())
    pieces: list[str] = []
    last: StreamDelta | None = None
    rest = Generation([])
    async with aclosing(merge_streams(sources)) as items:
        async for item in items:
            if isinstance(item, Generation):
                rest = item  # held back: the reasoning is one text, the first draft's pieces come first
                continue
            if item.text:
                pieces.append(item.text)
                yield DraftDelta(index, 0, 0, item.text)
            last = item
    if not pieces:
        yield DraftDelta(index, 0, 0, "")  # an empty draft is still a draft, with its heading
    usage = Usage()
    usage.add(last.usage if last and last.usage else Usage(requests=1))
    usage.add(rest.usage)
    first = Completion("".join(pieces), last.finish_reason if last else None)
    yield Generation([first, *rest.completions], usage)
