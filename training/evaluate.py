"""`aft eval`: does propose-and-aggregate beat one sample and majority vote, on a task with checkable answers?

On held-out problems of a task, through the served path (the backend and
serving.pipeline.Pipeline, so the prompts are serving/format.py's), it measures:

- SFT, one sample; SFT, greedy;
- SFT, majority vote over N samples, and the best of them (pass@N: any of them right);
- AFT answering directly (the proposer call, no drafts); AFT, greedy;
- AFT propose-and-aggregate over a grid of N and rounds, and, on every such run,
  majority vote over the very N round-0 proposals it started from and their best (pass@N);
- on request, the same runs with early exit (a threshold of agreeing drafts) or subset
  aggregation (each aggregation reads K of the N drafts).

Each row also counts the completion tokens its answers took (every sample and round), so
that methods compare in tokens per correct answer. Accuracy comes with a Wilson 95%
interval; training/results.py holds the rows and writes them out (results.json, results.md,
accuracy.png, tokens.png). The task and its scoring are
training/tasks.py's. `evaluate_checkpoints` is the library entry (the toy recipe calls it
with its own engine settings); `aft eval` is its command, with the engine flags of the
checkpoints it evaluates.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeVar

from serving.backends.base import Backend, Generation, Sampling
from serving.backends.vllm import VLLMBackend
from serving.backends.vllm_engine import EngineConfig
from serving.early_exit import parse_share
from serving.format import AggregationFormat, proposer_messages
from serving.manifest import read_manifest
from serving.pipeline import Answer, Pipeline, PipelineParams
from training.engine import add_engine_arguments, checkpoint_problem, engine_config
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
    Row,
    early_exit_method,
    markdown_table,
    subset_method,
    write_results,
)
from training.task_registry import TASKS, make_task
from training.tasks import Problem, Task, count_correct, count_votes_correct

T = TypeVar("T")


async def _bounded(items: Sequence[T], run: Callable[[T], Awaitable[Any]], concurrency: int) -> list[Any]:
    """Run `run` on every item with at most `concurrency` in flight (the engine batches them)."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(item: T) -> Any:
        async with semaphore:
            return await run(item)

    return list(await asyncio.gather(*(one(item) for item in items)))


async def sample(backend: Backend, problems: Sequence[Problem], sampling: Sampling, n: int, *,
                 concurrency: int = 128) -> list[Generation]:
    """`n` direct answers (proposer format) to every problem, one request with n samples each: the
    Generation of each problem, its usage what the request generated."""
    greedy = sampling.temperature == 0

    async def one(problem: Problem) -> Generation:
        # vLLM refuses n > 1 without sampling; greedy samples are all the same anyway, so one is
        # generated and repeated, and usage counts its tokens once, as they were spent.
        generation = await backend.generate("proposer", proposer_messages(problem.conversation), sampling,
                                            n=1 if greedy else n)
        return Generation(generation.completions * (n if greedy else 1), generation.usage)

    return await _bounded(problems, one, concurrency)


@dataclass
class Drafts:
    """One problem's drafts, and the completion tokens the first N of them took, for each N asked."""

    texts: list[str]
    tokens: dict[int, int]


async def sample_drafts(backend: Backend, problems: Sequence[Problem], sampling: Sampling,
                        sizes: Sequence[int]) -> list[Drafts]:
    """max(sizes) drafts of every problem, sampled in chunks at the boundaries of `sizes` so that the
    tokens of the first N drafts are counted exactly for every N of `sizes` (usage is per request)."""
    bounds = sorted(set(sizes))

    def chunk_sampling(low: int) -> Sampling:
        # A seeded request repeats itself: each chunk gets its own seed, or chunks would be copies.
        return sampling if sampling.seed is None else replace(sampling, seed=sampling.seed + low)

    chunks = await asyncio.gather(*(sample(backend, problems, chunk_sampling(low), high - low)
                                    for low, high in pairwise([0, *bounds])))
    drafts = []
    for i in range(len(problems)):
        texts: list[str] = []
        tokens: dict[int, int] = {}
        spent = 0
        for bound, chunk in zip(bounds, chunks, strict=True):
            texts += [c.text for c in chunk[i].completions]
            spent += chunk[i].usage.completion_tokens
            tokens[bound] = spent
        drafts.append(Drafts(texts, tokens))
    return drafts


def count_any_correct(task: Task, problems: Sequence[Problem], samples: Sequence[Sequence[str]]) -> int:
    """How many problems at least one of their `samples` answers right (pass@N, the oracle best of N)."""
    return sum(any(task.extract(s) == p.answer for s in group) for p, group in zip(problems, samples, strict=True))


def _completion_tokens(generations: Sequence[Generation]) -> int:
    return sum(g.usage.completion_tokens for g in generations)


async def evaluate_sft(backend: Backend, task: Task, problems: Sequence[Problem], draft: Sampling,
                       final: Sampling, proposals: Sequence[int]) -> list[Row]:
    """SFT rows: greedy, one sample (final sampling), one draft, and over the first N of max(proposals)
    drafts (draft sampling) the majority vote and the best of them (pass@N)."""
    total = len(problems)
    greedy = await sample(backend, problems, Sampling(temperature=0.0, top_p=1.0, max_tokens=final.max_tokens), 1)
    single = await sample(backend, problems, final, 1)
    drafts = await sample_drafts(backend, problems, draft, [1, *proposals])

    def first(generations: Sequence[Generation]) -> list[str]:
        return [g.completions[0].text for g in generations]

    def tokens(n: int) -> int:
        return sum(d.tokens[n] for d in drafts)

    rows = [Row(SFT_GREEDY, "sft", 1, 0, count_correct(task, problems, first(greedy)), total,
                _completion_tokens(greedy)),
            Row(SFT_ONE, "sft", 1, 0, count_correct(task, problems, first(single)), total,
                _completion_tokens(single)),
            Row(SFT_DRAFT, "sft", 1, 0, count_correct(task, problems, [d.texts[0] for d in drafts]), total, tokens(1))]
    for n in proposals:
        if n > 1:
            groups = [d.texts[:n] for d in drafts]
            rows += [Row(SFT_MAJORITY, "sft", n, 0, count_votes_correct(task, problems, groups), total, tokens(n)),
                     Row(SFT_ORACLE, "sft", n, 0, count_any_correct(task, problems, groups), total, tokens(n))]
    return rows


async def propose_and_aggregate(backend: Backend, problems: Sequence[Problem], params: PipelineParams, *,
                                concurrency: int = 128,
                                aggregation_format: AggregationFormat = AggregationFormat.PAPER) -> list[Answer]:
    """One pipeline run's Answer for every problem (its layers hold the drafts, its usage the tokens)."""
    pipeline = Pipeline(backend, aggregation_format=aggregation_format)

    async def one(problem: Problem) -> Answer:
        return (await pipeline.run(problem.conversation, params))[0]

    return await _bounded(problems, one, concurrency)


def _proposals(answer: Answer) -> list[str]:
    return answer.layers[0].outputs if answer.layers else []


def _early_exits(answers: Sequence[Answer], rounds: int) -> list[int]:
    """How many of `answers` stopped at each round (0 .. rounds - 1) because its drafts agreed."""
    counts = [0] * rounds
    for answer in answers:
        if answer.early_exit_round is not None:
            counts += [0] * (answer.early_exit_round + 1 - len(counts))
            counts[answer.early_exit_round] += 1
    return counts


def variants(n: int, early_exit: Sequence[float], subset: Sequence[int]) -> list[tuple[str, dict[str, Any]]]:
    """The pipelines measured beside the full one at N = n: (method name, PipelineParams settings).
    Early exit needs drafts to agree with each other, so not at N = 1; K >= N reads all N drafts,
    which is the full pipeline."""
    if n == 1:
        return []
    return ([(early_exit_method(t), {"early_exit": t}) for t in early_exit]
            + [(subset_method(k), {"subset": k}) for k in subset if k < n])


async def evaluate_aft(backend: Backend, task: Task, problems: Sequence[Problem], draft: Sampling,
                       final: Sampling, proposals: Sequence[int], rounds: Sequence[int], *,
                       early_exit: Sequence[float] = (), subset: Sequence[int] = (),
                       aggregation_format: AggregationFormat = AggregationFormat.PAPER) -> list[Row]:
    """AFT rows (aggregation prompts in `aggregation_format`, the one the checkpoint was trained on):
    direct and greedy answers, then propose-and-aggregate over the grid of N and rounds; beside
    each full run the vote over its round-0 proposals and their best (pass@N), then a run with each early
    exit threshold and each subset K of `variants`."""
    total = len(problems)
    direct = await sample(backend, problems, final, 1)
    greedy = await sample(backend, problems, Sampling(temperature=0.0, top_p=1.0, max_tokens=final.max_tokens), 1)
    rows = [Row(AFT_GREEDY, "aft", 1, 0, count_correct(task, problems, [g.completions[0].text for g in greedy]),
                total, _completion_tokens(greedy)),
            Row(AFT_DIRECT, "aft", 1, 0, count_correct(task, problems, [d.completions[0].text for d in direct]),
                total, _completion_tokens(direct))]

    def pa_row(method: str, n: int, r: int, answers: Sequence[Answer]) -> Row:
        return Row(method, "aft", n, r, count_correct(task, problems, [a.text for a in answers]), total,
                   sum(a.usage.completion_tokens for a in answers))

    for r in rounds:
        for n in proposals:
            params = PipelineParams(proposals=n, rounds=r, draft_sampling=draft, final_sampling=final)
            answers = await propose_and_aggregate(backend, problems, params, aggregation_format=aggregation_format)
            rows.append(pa_row(AFT_PA, n, r, answers))
            if n > 1:  # the very round-0 proposals this run aggregated: their vote and their best
                groups = [_proposals(a) for a in answers]
                spent = sum(a.usage_by_round[0].completion_tokens for a in answers)
                rows += [Row(AFT_PROPOSAL_MAJORITY, "aft", n, r, count_votes_correct(task, problems, groups),
                             total, spent),
                         Row(AFT_PROPOSAL_ORACLE, "aft", n, r, count_any_correct(task, problems, groups),
                             total, spent)]
            for method, setting in variants(n, early_exit, subset):
                answers = await propose_and_aggregate(backend, problems, replace(params, **setting),
                                                      aggregation_format=aggregation_format)
                row = pa_row(method, n, r, answers)
                if "early_exit" in setting:
                    row.early_exits = _early_exits(answers, r)
                rows.append(row)
    return rows


def _sampling_dict(sampling: Sampling) -> dict[str, Any]:
    return {k: v for k, v in asdict(sampling).items() if k in ("temperature", "top_p", "max_tokens")}


async def evaluate(sft: Backend, aft: Backend, task: Task, *, problems: int, seed: int, draft: Sampling,
                   final: Sampling, proposals: Sequence[int], rounds: Sequence[int],
                   early_exit: Sequence[float] = (), subset: Sequence[int] = (),
                   skip_baseline: bool = False,
                   aggregation_format: AggregationFormat = AggregationFormat.PAPER) -> Results:
    """Every row on the same `problems` held-out problems; starts and closes each backend in turn
    (one engine at a time: on a small host two would fight for the same cores), and once when `sft` is
    `aft` (a model that is not aggregation-tuned against itself: the paper's baseline). `early_exit`
    (thresholds) and `subset` (K) add propose-and-aggregate rows with that setting at every N and rounds
    of the grid. `skip_baseline` leaves out the SFT rows (an earlier run measured them on these problems)."""
    started = time.monotonic()
    held_out = task.problems(problems, seed)
    results = Results(task.name, len(held_out), _sampling_dict(draft), _sampling_dict(final))
    async def run_sft() -> list[Row]:
        return await evaluate_sft(sft, task, held_out, draft, final, proposals)

    async def run_aft() -> list[Row]:
        return await evaluate_aft(aft, task, held_out, draft, final, proposals, rounds, early_exit=early_exit,
                                  subset=subset, aggregation_format=aggregation_format)

    runs = [] if skip_baseline else [run_sft]
    runs.append(run_aft)
    # One engine start when both are the same backend: on two cores a start costs minutes.
    stages = [(aft, runs)] if sft is aft or skip_baseline else [(sft, runs[:1]), (aft, runs[1:])]
    for backend, stage in stages:
        await backend.start()
        try:
            for run in stage:
                results.rows += await run()
        finally:
            await backend.close()
    results.seconds = time.monotonic() - started
    return results


def default_sampling(model: str | Path, max_tokens: int, *, proposal_temperature: float | None = None,
                     proposal_top_p: float | None = None, temperature: float | None = None,
                     top_p: float | None = None) -> tuple[Sampling, Sampling]:
    """Draft and final sampling: what is given, else the checkpoint's aft.json recommendation, else the
    service's defaults. ManifestError when the checkpoint's aft.json is unusable."""
    manifest = read_manifest(model) if Path(model).is_dir() else None
    advice = manifest.recommended.as_dict() if manifest else {}

    def setting(name: str, given: float | None, default: float) -> float:
        return float(given if given is not None else advice.get(name, default))

    draft = Sampling(setting("proposal_temperature", proposal_temperature, 0.7),
                     setting("proposal_top_p", proposal_top_p, 0.95), max_tokens)
    final = Sampling(setting("temperature", temperature, 0.7), setting("top_p", top_p, 1.0), max_tokens)
    return draft, final


def evaluate_checkpoints(model: str, baseline: str, task: Task, engine: Callable[[str], EngineConfig], *,
                         problems: int, seed: int, draft: Sampling, final: Sampling, proposals: Sequence[int],
                         rounds: Sequence[int], early_exit: Sequence[float] = (),
                         subset: Sequence[int] = (), skip_baseline: bool = False) -> Results:
    """`evaluate` of the AFT checkpoint `model` against the SFT checkpoint `baseline`, each on an in-process
    engine built by `engine(path)` (the caller's settings: the checkpoint's dtype, context and memory);
    one engine for both when they are the same checkpoint."""
    aft = VLLMBackend(engine(model))
    sft = aft if model == baseline else VLLMBackend(engine(baseline))
    manifest = read_manifest(model) if Path(model).is_dir() else None
    results = asyncio.run(evaluate(sft, aft, task, problems=problems, seed=seed, draft=draft, final=final,
                                   proposals=proposals, rounds=rounds, early_exit=early_exit, subset=subset,
                                   skip_baseline=skip_baseline,
                                   aggregation_format=manifest.format if manifest else AggregationFormat.PAPER))
    results.models = {"aft": model, "sft": baseline}
    return results


def positive_ints(text: str) -> list[int]:
    """An argparse type: positive integers separated by commas, sorted, each once."""
    values = sorted({int(v) for v in text.split(",") if v.strip()})
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def _thresholds(text: str) -> list[float]:
    """Early exit thresholds: "all" (1.0) or shares of the drafts in (0, 1], comma-separated."""
    try:
        values = {parse_share(part) for part in text.split(",") if part.strip()}
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}; separate several with commas") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one threshold")
    return sorted(values, reverse=True)


def make_parser(prog: str = "aft eval") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Compare SFT (one sample, majority vote) with AFT (direct, propose-and-aggregate) "
                               "on held-out problems of a task with checkable answers, through the served "
                               "path (in-process vLLM); writes results.json, results.md, accuracy.png and "
                               "tokens.png.")
    parser.add_argument("--model", required=True, help="The AFT checkpoint (exported, with aft.json).")
    parser.add_argument("--baseline", required=True, help="The SFT checkpoint it was fine-tuned from.")
    parser.add_argument("--task", default="multiplication", choices=TASKS,
                        help="Task with checkable answers (training/tasks.py; word: training/word_problems.py).")
    parser.add_argument("--digits", type=int, help="Digits of the number multiplied (default 8), or of the "
                        "sequence reversed (default 16).")
    parser.add_argument("--problems", type=int, default=1000, help="Held-out problems (the same for every row).")
    parser.add_argument("--seed", type=int, default=1000, help="Seed of the held-out problems and the engines.")
    parser.add_argument("--proposals", type=positive_ints, default=[1, 2, 4, 8], help="Grid of N (comma-separated).")
    parser.add_argument("--rounds", type=positive_ints, default=[1, 2],
                        help="Grid of aggregation rounds (comma-separated).")
    parser.add_argument("--early-exit", type=_thresholds, default=[], metavar="all,0.6",
                        help="Also measure propose-and-aggregate stopping when this share of a round's drafts "
                             "agree (\"all\" or a fraction; comma-separated), at every N > 1 and rounds of "
                             "the grid (default: none).")
    parser.add_argument("--subset", type=positive_ints, default=[], metavar="2,3",
                        help="Also measure propose-and-aggregate whose aggregations each read a random K of the "
                             "N drafts, for each K (comma-separated), at every N > K and rounds of the grid "
                             "(default: none).")
    parser.add_argument("--proposal-temperature", type=float, help="Draft sampling (default: aft.json, else 0.7).")
    parser.add_argument("--proposal-top-p", type=float, help="Draft top_p (default: aft.json, else 0.95).")
    parser.add_argument("--temperature", type=float, help="Final answers and single samples (aft.json, else 0.7).")
    parser.add_argument("--top-p", type=float, help="Final top_p (default: aft.json, else 1.0).")
    parser.add_argument("--max-tokens", type=int, default=32, help="Token limit of every generation.")
    parser.add_argument("--skip-baseline", action="store_true",
                        help="Leave out the --baseline rows (one sample, vote, best of N): measured by an earlier "
                             "run on the same --problems and --seed; its engine is not started.")
    parser.add_argument("--out", default="bench/results/toy", help="Directory for the results.")
    add_engine_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "aft eval") -> int:
    args = make_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    problems = [f"{prog}: --{flag} {why}" for flag, path in (("model", args.model), ("baseline", args.baseline))
                if (why := checkpoint_problem(path))]
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    try:
        task = make_task(args.task, digits=args.digits)
        draft, final = default_sampling(
            args.model, args.max_tokens, proposal_temperature=args.proposal_temperature,
            proposal_top_p=args.proposal_top_p, temperature=args.temperature, top_p=args.top_p)
    except ValueError as exc:  # an unknown task; ManifestError (a ValueError) names the aft.json
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    results = evaluate_checkpoints(
        args.model, args.baseline, task, lambda path: engine_config(args, path, seed=args.seed),
        problems=args.problems, seed=args.seed, draft=draft, final=final, proposals=args.proposals,
        rounds=args.rounds, early_exit=args.early_exit, subset=args.subset, skip_baseline=args.skip_baseline)
    paths = write_results(results, args.out)
    print(markdown_table(results))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":  # the vllm engine spawns processes that re-import __main__
    sys.exit(main(prog="python -m training.evaluate"))
