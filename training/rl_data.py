"""Rows for `aft train --method grpo`: aggregation prompts over on-policy drafts, and the answer to check.

A row (what `aft data rl` writes, one JSON object a line):

    {"prompt": [system: the aggregation template over the drafts, *conversation],
     "answer": "the reference", "round": 1 | 2, "reads": K, "of": N, "hard": true | false}

`prompt` is `serving.format.aggregator_messages`, the prompt the service sends, so the policy is
trained on what it is served; GRPOTrainer samples a group of completions for each and the reward
(training/rewards.py) checks each completion against `answer`. The other fields say what the
prompt is, for the mix and its summary:

- round 1, reads = of = N: an aggregation over all N drafts (the pipeline's first round);
- round 1, reads = K < N: a subset prompt (Recursive Self-Aggregation), K random drafts of N;
- round 2: an aggregation over N round-1 aggregations of those drafts, written by the same
  model: the pipeline's second round, which imitation never showed the model;
- hard: at most half of what the prompt reads is right (AggLM's hard groups: the drafts'
  majority is wrong). Easy groups, whose drafts mostly agree on the right answer, teach a copy;
  hard ones are where aggregation beats the vote. `hard_share` sets the mix.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from serving.backends.base import Backend, Sampling
from serving.concurrency import all_or_first_error
from serving.format import AggregationFormat, Message, aggregator_messages
from training.rows import DataError, Row, Sample

Check = Callable[[str, str], float]
"""(response, reference) -> reward; 1.0 is right (training/rewards.py)."""

RL_FIELDS = ("prompt", "answer", "round", "reads", "of", "hard")


@dataclass(frozen=True)
class RLGroup:
    """One query: its N on-policy drafts and, for round-2 prompts, N aggregations of them."""

    conversation: list[Message]
    answer: str
    drafts: list[str]
    aggregations: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RLMix:
    """What the rows hold: shares of prompt kinds and of hard groups."""

    hard_share: float = 0.5
    """Share of rows whose prompt reads mostly wrong drafts (the rest easy); surplus rows of the kind in
    excess are dropped, so the share holds exactly where both kinds exist."""
    round2_share: float = 0.25
    """Share of queries whose row is a round-2 prompt (needs the group's aggregations)."""
    subset_share: float = 0.25
    """Share of queries whose row reads `subset_k` of the N drafts."""
    subset_k: int = 3

    def __post_init__(self) -> None:
        for name in ("hard_share", "round2_share", "subset_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {getattr(self, name)}")
        if self.round2_share + self.subset_share > 1.0:
            raise ValueError("round2_share + subset_share must be at most 1")
        if self.subset_k < 1:
            raise ValueError("subset_k must be >= 1")


def is_hard(proposals: Sequence[str], answer: str, check: Check) -> bool:
    """At most half of `proposals` are right: their majority is not the right answer."""
    right = sum(check(p, answer) >= 1.0 for p in proposals)
    return 2 * right <= len(proposals)


def rl_row(conversation: Sequence[Message], proposals: Sequence[str], answer: str, *, round_: int, of: int,
           hard: bool, fmt: AggregationFormat = AggregationFormat.PAPER) -> Row:
    """One RL row: the aggregator prompt over `proposals` (serving/format.py's bytes, layout `fmt`) and
    the answer."""
    prompt = [{"role": m["role"], "content": m["content"]}
              for m in aggregator_messages(conversation, proposals, fmt)]
    return {"prompt": prompt, "answer": answer, "round": round_, "reads": len(proposals), "of": of, "hard": hard}


def _kind(rng: random.Random, group: RLGroup, mix: RLMix) -> str:
    draw = rng.random()
    if draw < mix.round2_share:  # without aggregations, the full round-1 prompt in its place
        return "round2" if group.aggregations else "full"
    if draw < mix.round2_share + mix.subset_share and mix.subset_k < len(group.drafts):
        return "subset"
    return "full"


def rl_rows(groups: Sequence[RLGroup], check: Check, mix: RLMix, *, seed: int = 0, limit: int | None = None,
            fmt: AggregationFormat = AggregationFormat.PAPER) -> tuple[list[Row], dict[str, Any]]:
    """One row a group (its kind drawn by `mix`), then hard and easy rows kept at `mix.hard_share`
    (as many as both kinds allow, at most `limit`), shuffled. Returns the rows and a summary of what
    was available and what was kept."""
    rng = random.Random(seed)
    hard: list[Row] = []
    easy: list[Row] = []
    for group in groups:
        kind = _kind(rng, group, mix)
        if kind == "round2":
            read, round_ = list(group.aggregations), 2
        elif kind == "subset":
            read, round_ = rng.sample(group.drafts, mix.subset_k), 1
        else:
            read, round_ = list(group.drafts), 1
        if not read:
            continue
        of = len(group.aggregations) if round_ == 2 else len(group.drafts)
        row = rl_row(group.conversation, read, group.answer, round_=round_, of=of,
                     hard=is_hard(read, group.answer, check), fmt=fmt)
        (hard if row["hard"] else easy).append(row)
    available = {"hard": len(hard), "easy": len(easy)}
    total = len(hard) + len(easy) if limit is None else min(limit, len(hard) + len(easy))
    # The most rows at exactly hard_share; where one kind is missing altogether, the other alone.
    if 0 < mix.hard_share < 1 and hard and easy:
        total = min(total, int(len(hard) / mix.hard_share), int(len(easy) / (1 - mix.hard_share)))
    want_hard = min(len(hard), round(mix.hard_share * total)) if easy else min(len(hard), total)
    kept = hard[:want_hard] + easy[:min(len(easy), total - want_hard)]
    rng.shuffle(kept)
    kinds = Counter(("round 2" if r["round"] == 2 else "subset" if r["reads"] < r["of"] else "full") for r in kept)
    summary = {"groups": len(groups), "available": available, "rows": len(kept),
               "hard": sum(r["hard"] for r in kept), "easy": sum(not r["hard"] for r in kept),
               "kinds": dict(sorted(kinds.items())), "hard_share": mix.hard_share,
               "round2_share": mix.round2_share, "subset_share": mix.subset_share, "subset_k": mix.subset_k}
    return kept, summary


def validate_rl_rows(rows: Sequence[Row], *, source: str | None = None) -> None:
    """DataError naming the first row (1-based) that GRPO training cannot use."""
    if not rows:
        raise DataError(1, "no rows", source=source)
    for i, row in enumerate(rows, 1):
        prompt = row.get("prompt")
        if not isinstance(prompt, list) or not prompt or not all(
                isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") for m in prompt):
            raise DataError(i, "'prompt' must be a non-empty list of chat messages", source=source)
        if prompt[-1]["role"] == "assistant":
            raise DataError(i, "the prompt ends with an assistant turn: nothing is left to generate", source=source)


async def sample_aggregations(backend: Backend, samples: Sequence[Sample], sampling: Sampling, *,
                              concurrency: int = 64, fmt: AggregationFormat = AggregationFormat.PAPER,
                              ) -> list[list[str]]:
    """For each sample of N proposals, N aggregations of all of them (aggregator prompt, one request with
    n = N), as the pipeline's intermediate round writes them: what a round-2 prompt reads. Order kept."""
    results: list[list[str]] = [[] for _ in samples]
    pending = iter(enumerate(samples))

    async def worker() -> None:
        for i, sample in pending:
            generation = await backend.generate("aggregator", aggregator_messages(sample.conversation,
                                                                                 sample.proposals, fmt), sampling,
                                                  n=len(sample.proposals))
            results[i] = [c.text for c in generation.completions]

    await all_or_first_error(worker() for _ in range(min(concurrency, len(samples)) or 1))
    return results


def groups_of(samples: Sequence[Sample], aggregations: Sequence[Sequence[str]]) -> list[RLGroup]:
    """RLGroups of on-policy samples (the target is the reference answer) and their aggregations."""
    return [RLGroup(s.conversation, s.target, list(s.proposals), list(a))
            for s, a in zip(samples, aggregations, strict=True)]
