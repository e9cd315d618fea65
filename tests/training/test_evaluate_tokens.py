"""aft eval: the tokens every row generated, pass@N beside each vote, and the early exit and subset rows."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar

import pytest

from serving.backends.base import Sampling, Usage
from serving.format import AGGREGATION_TEMPLATE, Message
from serving.pipeline import Answer, Pipeline, PipelineParams
from tests.fakes import Call, ScriptedBackend
from training import evaluate as module
from training.evaluate import evaluate, make_parser, variants
from training.results import (
    AFT_DIRECT,
    AFT_GREEDY,
    AFT_PA,
    AFT_PROPOSAL_MAJORITY,
    AFT_PROPOSAL_ORACLE,
    SFT_DRAFT,
    SFT_GREEDY,
    SFT_MAJORITY,
    SFT_ONE,
    SFT_ORACLE,
    Results,
    early_exit_method,
    subset_method,
)
from training.tasks import MultiplicationTask

DRAFT, FINAL = Sampling(1.0, 1.0, 16), Sampling(0.7, 1.0, 16)
PROBLEMS = 10


def product(call: Call) -> int:
    a, k = map(int, re.findall(r"\d+", call.messages[-1]["content"]))
    return a * k


def draft(p: int, n: int, i: int) -> str:
    """Sample i of a request for n drafts (the scripted backend counts a token per word): alone, wrong in
    2 tokens; in a larger request, sample 0 right in 1 token, sample 1 wrong in 3, the others wrong in 2."""
    if n > 1 and i == 0:
        return str(p)
    if n > 1 and i == 1:
        return f"{p + 2} x y"
    return f"{p + 1} x"


def scripted(call: Call, i: int) -> str:
    p = product(call)
    if AGGREGATION_TEMPLATE in call.messages[0]["content"]:
        return str(p) if call.sampling == FINAL else f"{p} z"  # final answers 1 token, intermediate drafts 2
    if call.sampling.temperature == 0:
        return f"{p + 1} g"  # greedy: wrong, 2 tokens
    if call.sampling == FINAL:
        return f"{p} a b"  # one sample: right, 3 tokens
    return draft(p, call.n, i)


async def run(proposals: Sequence[int], rounds: Sequence[int], **grid: Any) -> Results:
    sft, aft = ScriptedBackend(reply=scripted), ScriptedBackend(reply=scripted)
    return await evaluate(sft, aft, MultiplicationTask(4), problems=PROBLEMS, seed=5, draft=DRAFT, final=FINAL,
                          proposals=proposals, rounds=rounds, **grid)


async def test_every_row_counts_the_completion_tokens_its_answers_took() -> None:
    results = await run([1, 2, 4], [1, 2])
    per_problem = {(row.method, row.proposals, row.rounds): row.tokens / PROBLEMS for row in results.rows}
    # A greedy answer is generated once however many copies a vote would need.
    assert per_problem[(SFT_GREEDY, 1, 0)] == per_problem[(AFT_GREEDY, 1, 0)] == 2
    assert per_problem[(SFT_ONE, 1, 0)] == per_problem[(AFT_DIRECT, 1, 0)] == 3
    # SFT drafts come in requests of 1, 1 and 2 (the steps of the grid), so the first N are counted exactly:
    # [wrong 2, wrong 2, right 1, wrong 3].
    assert per_problem[(SFT_DRAFT, 1, 0)] == 2
    assert per_problem[(SFT_MAJORITY, 2, 0)] == per_problem[(SFT_ORACLE, 2, 0)] == 4
    assert per_problem[(SFT_MAJORITY, 4, 0)] == per_problem[(SFT_ORACLE, 4, 0)] == 8
    # Propose-and-aggregate: round 0's N drafts (N=4: 1 + 3 + 2 + 2), N intermediate drafts of 2 tokens a
    # round, the final answer 1; the vote and best-of-N over its proposals: round 0 only.
    assert per_problem[(AFT_PA, 1, 1)] == 2 + 1 and per_problem[(AFT_PA, 1, 2)] == 2 + 2 + 1
    assert per_problem[(AFT_PA, 4, 1)] == 8 + 1 and per_problem[(AFT_PA, 4, 2)] == 8 + 4 * 2 + 1
    for r in (1, 2):
        assert per_problem[(AFT_PROPOSAL_MAJORITY, 4, r)] == per_problem[(AFT_PROPOSAL_ORACLE, 4, r)] == 8
        assert per_problem[(AFT_PROPOSAL_MAJORITY, 2, r)] == 1 + 3
    row = results.find(AFT_PA, 4, 2)
    assert row.tokens_per_problem == 17 and row.tokens_per_correct == 17  # every answer right


async def test_tokens_per_correct_answer_and_pass_at_n() -> None:
    results = await run([1, 2, 4], [1])
    assert results.find(SFT_ONE).tokens_per_correct == 3  # all right
    greedy = results.find(SFT_GREEDY)
    assert greedy.correct == 0 and greedy.tokens_per_correct is None and greedy.tokens_per_problem == 2
    # SFT drafts [p+1, p+1, p, p+2]: the vote says p+1, the best of four is right.
    assert results.find(SFT_MAJORITY, 4).accuracy == 0 and results.find(SFT_ORACLE, 4).accuracy == 1
    assert results.find(SFT_ORACLE, 4).tokens_per_correct == 8
    assert results.find(SFT_ORACLE, 2).accuracy == 0  # [p+1, p+1]
    # A run's proposals at N=4, [p, p+2, p+1, p+1]: the vote says p+1, the best of them is right.
    assert results.find(AFT_PROPOSAL_MAJORITY, 4, 1).accuracy == 0
    assert results.find(AFT_PROPOSAL_ORACLE, 4, 1).accuracy == 1


def _agreed(drafts: Sequence[str], share: float) -> str | None:
    """The draft that `share` of `drafts`, and never fewer than two, agree on (serving's rule)."""
    keys = [" ".join(d.split()) for d in drafts]
    counts = Counter(keys)
    need = max(2, math.ceil(round(share * len(drafts), 9)))
    return next((d for d, key in zip(drafts, keys, strict=True) if counts[key] >= need), None)


class EarlyExitPipeline(Pipeline):
    """serving's pipeline as PipelineParams promise it, for a branch where the pipeline ignores
    early_exit: the first round whose drafts agree gives the answer and nothing after it runs (an
    answer the pipeline itself stopped early passes as it is). Records every PipelineParams it ran."""

    params: ClassVar[list[PipelineParams]] = []

    async def run(self, conversation: Sequence[Message], params: PipelineParams, *, n: int = 1) -> list[Answer]:
        self.params.append(params)
        answers = await super().run(conversation, params, n=n)
        if params.early_exit is None:
            return answers
        for i, answer in enumerate(answers):
            if answer.early_exit_round is not None:
                continue
            for layer in answer.layers:
                agreed = _agreed(layer.drafts or layer.outputs, params.early_exit)
                if agreed is not None:
                    by_round = answer.usage_by_round[:layer.round + 1]
                    total = Usage()
                    for usage in by_round:
                        total.add(usage)
                    answers[i] = replace(answer, text=agreed, layers=answer.layers[:layer.round + 1], usage=total,
                                         usage_by_round=by_round, early_exit_round=layer.round)
                    break
        return answers


async def test_early_exit_and_subset_rows_beside_the_full_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "Pipeline", EarlyExitPipeline)
    monkeypatch.setattr(EarlyExitPipeline, "params", [])
    results = await run([1, 2, 4], [1, 2], early_exit=[1.0, 0.5], subset=[2, 3])
    exits_all, exits_half = early_exit_method(1.0), early_exit_method(0.5)
    assert exits_all != exits_half and AFT_PA in exits_all and "all" in exits_all and "50%" in exits_half
    rows = {(row.method, row.proposals, row.rounds): row for row in results.rows}
    for r in (1, 2):
        # Not at N = 1 (nothing to agree with); K >= N is the full pipeline, so K=2 at N=4 only.
        assert {m for m, n, rr in rows if n == 1 and rr == r} == {AFT_PA}
        assert {m for m, n, rr in rows if n == 2 and rr == r} == {
            AFT_PA, AFT_PROPOSAL_MAJORITY, AFT_PROPOSAL_ORACLE, exits_all, exits_half}
        assert {m for m, n, rr in rows if n == 4 and rr == r} == {
            AFT_PA, AFT_PROPOSAL_MAJORITY, AFT_PROPOSAL_ORACLE, exits_all, exits_half, subset_method(2),
            subset_method(3)}
        # Round 0's drafts never all agree, the intermediate round's always do: every problem exits there,
        # with no final answer after it.
        assert rows[(exits_all, 4, r)].early_exits == ([0] if r == 1 else [0, PROBLEMS])
        assert rows[(exits_half, 2, r)].early_exits == ([0] if r == 1 else [0, PROBLEMS])
        assert rows[(exits_all, 2, r)].tokens_per_problem == rows[(exits_half, 2, r)].tokens_per_problem == (
            1 + 3 + 1 if r == 1 else 1 + 3 + 2 * 2)
        # Half of N=4 ([p, p+2, p+1, p+1]) agree on p+1: stopping early is cheaper, and here wrong.
        half = rows[(exits_half, 4, r)]
        assert half.early_exits[0] == PROBLEMS and half.accuracy == 0 and half.tokens_per_correct is None
        assert half.tokens_per_problem == 8
    assert rows[(exits_all, 4, 1)].tokens_per_problem == rows[(AFT_PA, 4, 1)].tokens_per_problem == 9
    assert rows[(exits_all, 4, 2)].tokens_per_problem == 8 + 4 * 2
    assert rows[(exits_all, 4, 2)].accuracy == rows[(exits_half, 2, 2)].accuracy == 1
    seen = {(p.proposals, p.rounds, p.early_exit, p.subset) for p in EarlyExitPipeline.params}
    assert {(4, 2, 1.0, None), (4, 2, 0.5, None), (4, 2, None, 2), (4, 2, None, 3), (4, 2, None, None)} <= seen
    assert (2, 1, None, 2) not in seen and (1, 1, 1.0, None) not in seen
    assert all(p.draft_sampling == DRAFT and p.final_sampling == FINAL for p in EarlyExitPipeline.params)


def test_variants_skip_what_would_be_the_full_pipeline() -> None:
    assert variants(1, [1.0], [2]) == []
    assert variants(3, [1.0, 0.6], [2, 3, 5]) == [(early_exit_method(1.0), {"early_exit": 1.0}),
                                                  (early_exit_method(0.6), {"early_exit": 0.6}),
                                                  (subset_method(2), {"subset": 2})]


def test_the_command_line_takes_early_exit_thresholds_and_subset_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    parser = make_parser()
    args = parser.parse_args(["--model", "m", "--baseline", "b", "--early-exit", "all,0.6", "--subset", "3,2",
                              "--proposals", "1,3,5,8"])
    assert (args.early_exit, args.subset, args.proposals) == ([1.0, 0.6], [2, 3], [1, 3, 5, 8])
    defaults = parser.parse_args(["--model", "m", "--baseline", "b"])
    assert (defaults.early_exit, defaults.subset) == ([], [])
    for bad in ("1.5", "0", "most", ","):
        with pytest.raises(SystemExit):
            parser.parse_args(["--model", "m", "--baseline", "b", "--early-exit", bad])
        assert "--early-exit" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["--model", "m", "--baseline", "b", "--subset", "0"])
    assert "--subset" in capsys.readouterr().err


async def test_seeded_drafts_are_not_copies_across_the_requests_of_the_grid() -> None:
    backend = ScriptedBackend(reply=scripted)
    problems = MultiplicationTask(4).problems(2, seed=1)
    drafts = await module.sample_drafts(backend, problems, replace(DRAFT, seed=7), [1, 2, 4])
    assert [(len(d.texts), sorted(d.tokens)) for d in drafts] == [(4, [1, 2, 4])] * 2
    assert sorted(c.sampling.seed for c in backend.calls) == [7, 7, 8, 8, 9, 9]  # per problem: chunks of 1, 1, 2
