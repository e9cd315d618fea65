"""`aft eval`: does propose-and-aggregate beat one sample and majority vote, on a task with checkable answers?

On held-out problems of a task, through the served path (the backend and
serving.pipeline.Pipeline, so the prompts are serving/format.py's), it measures:

- SFT, one sample; SFT, greedy;
- SFT, majority vote over N samples;
- AFT answering directly (the proposer call, no drafts); AFT, greedy;
- AFT propose-and-aggregate over a grid of N and rounds, and, on every such run,
  majority vote over the very N round-0 proposals it started from.

Accuracy comes with a Wilson 95% interval; training/results.py holds the rows and writes
them out (results.json, results.md, accuracy.png). The task and its scoring are
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
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from serving.backends.base import Backend, Sampling
from serving.backends.vllm import EngineConfig, VLLMBackend
from serving.format import proposer_messages
from serving.manifest import read_manifest
from serving.pipeline import Pipeline, PipelineParams
from training.engine import add_engine_arguments, checkpoint_problem, engine_config
from training.results import (
    AFT_DIRECT,
    AFT_GREEDY,
    AFT_PA,
    AFT_PROPOSAL_MAJORITY,
    SFT_DRAFT,
    SFT_GREEDY,
    SFT_MAJORITY,
    SFT_ONE,
    Results,
    Row,
    markdown_table,
    write_results,
)
from training.tasks import TASKS, Problem, Task, count_correct, count_votes_correct, make_task

T = TypeVar("T")


async def _bounded(items: Sequence[T], run: Callable[[T], Awaitable[Any]], concurrency: int) -> list[Any]:
    """Run `run` on every item with at most `concurrency` in flight (the engine batches them)."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(item: T) -> Any:
        async with semaphore:
            return await run(item)

    return list(await asyncio.gather(*(one(item) for item in items)))


async def sample(backend: Backend, problems: Sequence[Problem], sampling: Sampling, n: int, *,
                 concurrency: int = 128) -> list[list[str]]:
    """`n` direct answers (proposer format) to every problem, one request with n samples each."""
    greedy = sampling.temperature == 0

    async def one(problem: Problem) -> list[str]:
        # vLLM refuses n > 1 without sampling; greedy samples are all the same anyway.
        generation = await backend.generate("proposer", proposer_messages(problem.conversation), sampling,
                                            n=1 if greedy else n)
        return [c.text for c in generation.completions] * (n if greedy else 1)

    return await _bounded(problems, one, concurrency)


async def propose_and_aggregate(backend: Backend, problems: Sequence[Problem], params: PipelineParams, *,
                                concurrency: int = 128) -> list[tuple[list[str], str]]:
    """For every problem: (the round-0 proposals, the final answer) of one pipeline run."""
    pipeline = Pipeline(backend)

    async def one(problem: Problem) -> tuple[list[str], str]:
        answer = (await pipeline.run(problem.conversation, params))[0]
        return (answer.layers[0].outputs if answer.layers else []), answer.text

    return await _bounded(problems, one, concurrency)


async def evaluate_sft(backend: Backend, task: Task, problems: Sequence[Problem], draft: Sampling,
                       final: Sampling, proposals: Sequence[int]) -> list[Row]:
    """SFT rows: greedy, one sample (final sampling), one draft and majority vote over the first N of
    max(proposals) drafts (draft sampling)."""
    total = len(problems)
    greedy = await sample(backend, problems, Sampling(temperature=0.0, top_p=1.0, max_tokens=final.max_tokens), 1)
    single = await sample(backend, problems, final, 1)
    drafts = await sample(backend, problems, draft, max(proposals))
    rows = [Row(SFT_GREEDY, "sft", 1, 0, count_correct(task, problems, [g[0] for g in greedy]), total),
            Row(SFT_ONE, "sft", 1, 0, count_correct(task, problems, [s[0] for s in single]), total),
            Row(SFT_DRAFT, "sft", 1, 0, count_correct(task, problems, [d[0] for d in drafts]), total)]
    rows += [Row(SFT_MAJORITY, "sft", n, 0, count_votes_correct(task, problems, [d[:n] for d in drafts]), total)
             for n in proposals if n > 1]
    return rows


async def evaluate_aft(backend: Backend, task: Task, problems: Sequence[Problem], draft: Sampling,
                       final: Sampling, proposals: Sequence[int], rounds: Sequence[int]) -> list[Row]:
    """AFT rows: direct and greedy answers, then propose-and-aggregate over the grid of N and rounds."""
    total = len(problems)
    direct = await sample(backend, problems, final, 1)
    greedy = await sample(backend, problems, Sampling(temperature=0.0, top_p=1.0, max_tokens=final.max_tokens), 1)
    rows = [Row(AFT_GREEDY, "aft", 1, 0, count_correct(task, problems, [g[0] for g in greedy]), total),
            Row(AFT_DIRECT, "aft", 1, 0, count_correct(task, problems, [d[0] for d in direct]), total)]
    for r in rounds:
        for n in proposals:
            params = PipelineParams(proposals=n, rounds=r, draft_sampling=draft, final_sampling=final)
            runs = await propose_and_aggregate(backend, problems, params)
            rows.append(Row(AFT_PA, "aft", n, r, count_correct(task, problems, [text for _, text in runs]), total))
            if n > 1:  # the vote over the very round-0 proposals this run aggregated
                rows.append(Row(AFT_PROPOSAL_MAJORITY, "aft", n, r,
                                count_votes_correct(task, problems, [drafts for drafts, _ in runs]), total))
    return rows


def _sampling_dict(sampling: Sampling) -> dict[str, Any]:
    return {k: v for k, v in asdict(sampling).items() if k in ("temperature", "top_p", "max_tokens")}


async def evaluate(sft: Backend, aft: Backend, task: Task, *, problems: int, seed: int, draft: Sampling,
                   final: Sampling, proposals: Sequence[int], rounds: Sequence[int]) -> Results:
    """Every row on the same `problems` held-out problems; starts and closes each backend in turn
    (one engine at a time: on a small host two would fight for the same cores)."""
    started = time.monotonic()
    held_out = task.problems(problems, seed)
    results = Results(task.name, len(held_out), _sampling_dict(draft), _sampling_dict(final))
    async def run_sft() -> list[Row]:
        return await evaluate_sft(sft, task, held_out, draft, final, proposals)

    async def run_aft() -> list[Row]:
        return await evaluate_aft(aft, task, held_out, draft, final, proposals, rounds)

    for backend, run in ((sft, run_sft), (aft, run_aft)):
        await backend.start()
        try:
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
                         rounds: Sequence[int]) -> Results:
    """`evaluate` of the AFT checkpoint `model` against the SFT checkpoint `baseline`, each on an in-process
    engine built by `engine(path)` (the caller's settings: the checkpoint's dtype, context and memory)."""
    sft, aft = VLLMBackend(engine(baseline)), VLLMBackend(engine(model))
    results = asyncio.run(evaluate(sft, aft, task, problems=problems, seed=seed, draft=draft, final=final,
                                   proposals=proposals, rounds=rounds))
    results.models = {"aft": model, "sft": baseline}
    return results


def _ints(text: str) -> list[int]:
    values = sorted({int(v) for v in text.split(",") if v.strip()})
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def make_parser(prog: str = "aft eval") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Compare SFT (one sample, majority vote) with AFT (direct, propose-and-aggregate) "
                               "on held-out problems of a task with checkable answers, through the served "
                               "path (in-process vLLM); writes results.json, results.md and accuracy.png.")
    parser.add_argument("--model", required=True, help="The AFT checkpoint (exported, with aft.json).")
    parser.add_argument("--baseline", required=True, help="The SFT checkpoint it was fine-tuned from.")
    parser.add_argument("--task", default="multiplication", choices=TASKS,
                        help="Task with checkable answers (training/tasks.py).")
    parser.add_argument("--digits", type=int, default=8, help="multiplication: digits of the number multiplied.")
    parser.add_argument("--problems", type=int, default=1000, help="Held-out problems (the same for every row).")
    parser.add_argument("--seed", type=int, default=1000, help="Seed of the held-out problems and the engines.")
    parser.add_argument("--proposals", type=_ints, default=[1, 2, 4, 8], help="Grid of N (comma-separated).")
    parser.add_argument("--rounds", type=_ints, default=[1, 2], help="Grid of aggregation rounds (comma-separated).")
    parser.add_argument("--proposal-temperature", type=float, help="Draft sampling (default: aft.json, else 0.7).")
    parser.add_argument("--proposal-top-p", type=float, help="Draft top_p (default: aft.json, else 0.95).")
    parser.add_argument("--temperature", type=float, help="Final answers and single samples (aft.json, else 0.7).")
    parser.add_argument("--top-p", type=float, help="Final top_p (default: aft.json, else 1.0).")
    parser.add_argument("--max-tokens", type=int, default=32, help="Token limit of every generation.")
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
        rounds=args.rounds)
    paths = write_results(results, args.out)
    print(markdown_table(results))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":  # the vllm engine spawns processes that re-import __main__
    sys.exit(main(prog="python -m training.evaluate"))
