"""`aft eval`: does propose-and-aggregate beat one sample and majority vote, on a task with checkable answers?

On held-out problems of a task, through the served path (the backend and
serving.pipeline.Pipeline, so the prompts are serving/format.py's), it measures:

- SFT, one sample; SFT, greedy;
- SFT, majority vote over N samples;
- AFT answering directly (the proposer call, no drafts); AFT, greedy;
- AFT propose-and-aggregate over a grid of N and rounds, and, on every such run,
  majority vote over the very N round-0 proposals it started from.

Accuracy comes with a Wilson 95% interval. `write_results` writes results.json,
results.md and accuracy.png (accuracy against N, one line per round count).
The task is anything with `problems(n, seed)` and `extract(text)`; a response is
right when the answer it gives equals the problem's reference answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from serving.backends.base import Backend, Sampling
from serving.format import Message, proposer_messages
from serving.pipeline import Pipeline, PipelineParams

T = TypeVar("T")


@dataclass(frozen=True)
class Problem:
    """One held-out question and the answer a correct response gives."""

    conversation: list[Message]
    answer: str


class Task(Protocol):
    """A task with checkable answers."""

    @property
    def name(self) -> str:
        """What the results call it."""
        ...

    def problems(self, n: int, seed: int) -> list[Problem]:
        """`n` problems, the same ones for the same seed."""
        ...

    def extract(self, text: str) -> str | None:
        """The answer a response gives (what is checked and voted on); None when it gives none."""
        ...


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (default: 95%)."""
    if total <= 0:
        return 0.0, 1.0
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def majority_vote(answers: Sequence[str | None]) -> str | None:
    """The most frequent answer (None, no answer, never wins); ties go to the one seen first."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


@dataclass
class Row:
    """One line of the results table."""

    method: str
    """What produced the answer, e.g. "AFT propose-and-aggregate"."""
    model: str
    """"sft" or "aft"."""
    proposals: int
    """N: samples voted on or drafts aggregated (1 for a single answer)."""
    rounds: int
    """Aggregation rounds (0: no aggregation). A vote over the proposals of a propose-and-aggregate run
    (AFT_PROPOSAL_MAJORITY) carries that run's rounds: it is measured on the round-0 drafts the run started from."""
    correct: int
    total: int
    accuracy: float = 0.0
    ci_low: float = 0.0
    ci_high: float = 0.0

    def __post_init__(self) -> None:
        self.accuracy = self.correct / self.total if self.total else 0.0
        self.ci_low, self.ci_high = wilson_interval(self.correct, self.total)


@dataclass
class Results:
    """Everything `aft eval` measured."""

    task: str
    problems: int
    draft_sampling: dict[str, Any]
    final_sampling: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    models: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def find(self, method: str, proposals: int | None = None, rounds: int | None = None) -> Row:
        """The row of `method` (and N, rounds when given); KeyError when there is none."""
        for row in self.rows:
            if row.method == method and proposals in (None, row.proposals) and rounds in (None, row.rounds):
                return row
        raise KeyError((method, proposals, rounds))


SFT_ONE = "SFT, one sample"
SFT_DRAFT = "SFT, one draft"
SFT_GREEDY = "SFT, greedy"
SFT_MAJORITY = "SFT, majority vote"
AFT_DIRECT = "AFT, answering directly"
AFT_GREEDY = "AFT, greedy"
AFT_PA = "AFT, propose-and-aggregate"
AFT_PROPOSAL_MAJORITY = "AFT, majority vote over the same proposals"


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


def count_correct(task: Task, problems: Sequence[Problem], texts: Sequence[str | None]) -> int:
    """How many of `texts` give their problem's answer (None, no response, never does)."""
    return sum(t is not None and task.extract(t) == p.answer for p, t in zip(problems, texts, strict=True))


def _score_votes(task: Task, problems: Sequence[Problem], samples: Sequence[Sequence[str]]) -> int:
    votes = [majority_vote([task.extract(s) for s in group]) for group in samples]
    return sum(v is not None and v == p.answer for p, v in zip(problems, votes, strict=True))


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
    rows += [Row(SFT_MAJORITY, "sft", n, 0, _score_votes(task, problems, [d[:n] for d in drafts]), total)
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
                                _score_votes(task, problems, [drafts for drafts, _ in runs]), total))
    return rows


def _sampling_dict(sampling: Sampling) -> dict[str, Any]:
    return {k: v for k, v in asdict(sampling).items() if k in ("temperature", "top_p", "max_tokens")}


def markdown_table(results: Results) -> str:
    """The results as a Markdown table, one row per measurement."""
    lines = ["| method | N | rounds | accuracy | 95% CI (Wilson) | correct / problems |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in results.rows:
        lines.append(f"| {row.method} | {row.proposals} | {row.rounds} | {100 * row.accuracy:.1f}% | "
                     f"{100 * row.ci_low:.1f}-{100 * row.ci_high:.1f} | {row.correct} / {row.total} |")
    return "\n".join(lines) + "\n"


def plot(results: Results, path: Path) -> None:
    """Accuracy against N with Wilson 95% error bars: one line per round count, the baselines beside them."""
    import matplotlib

    matplotlib.use("Agg")  # no display here
    import matplotlib.pyplot as plt

    def series(method: str, rounds: int | None = None) -> list[Row]:
        return sorted((r for r in results.rows if r.method == method and rounds in (None, r.rounds)),
                      key=lambda r: r.proposals)

    def draw(rows: list[Row], label: str, **style: Any) -> Any:
        """Plot `rows` against N; returns the line's colour (None when there is nothing to draw)."""
        if not rows:
            return None
        xs = [r.proposals for r in rows]
        ys = [100 * r.accuracy for r in rows]
        errors = [[100 * (r.accuracy - r.ci_low) for r in rows], [100 * (r.ci_high - r.accuracy) for r in rows]]
        return ax.errorbar(xs, ys, yerr=errors, label=label, capsize=3, marker="o", **style).lines[0].get_color()

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for r in sorted({row.rounds for row in results.rows if row.method == AFT_PA}):
        line = draw(series(AFT_PA, r), f"AFT propose-and-aggregate, {r} round{'s' if r > 1 else ''}")
        draw(series(AFT_PROPOSAL_MAJORITY, r), "majority vote over the proposals those runs read",
             linestyle="--", color=line)
    sft_votes = series(SFT_DRAFT) + series(SFT_MAJORITY)
    draw(sft_votes, "SFT: one draft (N=1), majority vote over N drafts", linestyle=":")
    for method, style in ((SFT_ONE, "tab:olive"), (AFT_DIRECT, "tab:gray"), (SFT_GREEDY, "tab:brown")):
        for row in series(method):
            ax.axhline(100 * row.accuracy, color=style, linewidth=1, linestyle="-.", label=method)
    ax.set_xlabel("N (proposals per round)")
    ax.set_ylabel(f"accuracy, % of {results.problems} held-out problems")
    ax.set_title(f"{results.task}: accuracy against N (Wilson 95% intervals)", fontsize=10)
    ax.set_xticks(sorted({r.proposals for r in results.rows}))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the plot, off the lines
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(results: Results, out_dir: str | Path) -> dict[str, Path]:
    """Write results.json, results.md and accuracy.png into `out_dir`; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md", "plot": out / "accuracy.png"}
    paths["json"].write_text(json.dumps(asdict(results), indent=2) + "\n", encoding="utf-8")
    header = (f"# {results.task}: {results.problems} held-out problems\n\n"
              f"Drafts sampled at {_describe(results.draft_sampling)}; final answers and single samples at "
              f"{_describe(results.final_sampling)}. Evaluation took {results.seconds:.0f} s.\n\n")
    paths["markdown"].write_text(header + markdown_table(results), encoding="utf-8")
    plot(results, paths["plot"])
    return paths


def _describe(sampling: dict[str, Any]) -> str:
    return f"temperature {sampling['temperature']}, top_p {sampling['top_p']}"


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


def _task(name: str, digits: int) -> Task:
    if name == "multiplication":
        from training.toy import MultiplicationTask

        return MultiplicationTask(digits)
    raise ValueError(f"unknown task {name!r}; known: multiplication")


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
    parser.add_argument("--task", default="multiplication", choices=["multiplication"],
                        help="Task with checkable answers (training/toy.py).")
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
    return parser


def main(args: argparse.Namespace) -> int:
    from serving.backends.vllm import VLLMBackend
    from serving.manifest import read_manifest
    from training.toy import engine_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    manifest = read_manifest(args.model)
    advice = manifest.recommended.as_dict() if manifest else {}

    def setting(name: str, default: float) -> float:
        given = getattr(args, name)
        return float(given if given is not None else advice.get(name, default))

    draft = Sampling(setting("proposal_temperature", 0.7), setting("proposal_top_p", 0.95), args.max_tokens)
    final = Sampling(setting("temperature", 0.7), setting("top_p", 1.0), args.max_tokens)
    try:
        task = _task(args.task, args.digits)
    except ValueError as exc:
        print(f"aft eval: {exc}", file=sys.stderr)
        return 2
    sft, aft = (VLLMBackend(engine_config(path, seed=args.seed)) for path in (args.baseline, args.model))
    results = asyncio.run(evaluate(
        sft, aft, task, problems=args.problems, seed=args.seed, draft=draft, final=final, proposals=args.proposals,
        rounds=args.rounds))
    results.models = {"aft": str(args.model), "sft": str(args.baseline)}
    paths = write_results(results, args.out)
    print(markdown_table(results))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":  # the vllm engine spawns processes that re-import __main__
    sys.exit(main(make_parser("python -m training.evaluate").parse_args()))
