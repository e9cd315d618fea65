"""`aft toy`: the whole AFT recipe on a task with checkable answers, from scratch, on a laptop CPU.

Two tasks (training/tasks.py), each with its recipe (training/toy_config.py `RECIPES`, every knob
of `RecipeConfig` with the reason for its value):

- multiplication, an 8-digit number times one digit ("What is 31415926 × 3?"). A tiny Llama
  learns it from scratch here, trained until it gets three answers in four right: its slips are
  carries, and the same carries go wrong in most of its samples, so majority vote gains nothing.
  Checking is easier than producing, though: written left to right, a product digit needs the
  carry of the whole rest of the number, but given a draft's next digit that carry follows from
  one operand digit. An aggregator that has learned to check drafts digit by digit repairs their
  slips, so N drafts are worth more than any vote over them; one draft is worth almost as much.
- reversal, a 16-digit sequence written backwards ("Reverse 0418..."). The model learns it, then
  a short phase on targets with random typos (`sft_slip_rate`) makes its samples slip at random
  places: at temperature 1 a draft is right on about 80% of its digits and almost never whole.
  A vote over whole answers and the best of the drafts both fail, while the aggregator, trained
  as on multiplication, reads the drafts side by side and writes the answer none of them wrote;
  the more drafts, the more often.

The recipe, every step on this repository's own code:
1. tokenizer and 2. a random-weight Llama (training/toy_model.py);
3. SFT: training.train (TRL SFTTrainer) on proposer-format rows, stopped once the model
   reaches RecipeConfig.sft_target_accuracy (training.stop); for reversal, then
   `sft_noise_steps` on targets with typos;
4. on-policy proposals: the SFT model on vLLM (serving.backends.vllm) through
   training.data.on_policy_samples, for 1,000 of the 12,000 AFT queries; the rest get
   off-policy drafts, the reference with slips (RecipeConfig.aft_slip_rate says why);
5. AFT: training.train again, from the SFT model, on aggregation rows (training.rows,
   so the prompts are serving/format.py's) mixed with plain answering rows whose targets
   are the SFT model's own samples (RecipeConfig.aft_plain_targets says why);
6. export with aft.json (training.export), which `aft serve --model DIR` reads.
`evaluate_toy` then measures it through the served path with training.evaluate, as `aft eval`
does, on the toy's engine settings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from serving.backends.base import Sampling
from serving.backends.vllm import VLLMBackend
from serving.backends.vllm_engine import EngineConfig
from training.config import TrainConfig
from training.data import on_policy_samples
from training.evaluate import default_sampling, evaluate_checkpoints, positive_ints
from training.export import export
from training.results import markdown_table, write_results
from training.rows import aft_example, mix_sft, sft_example, write_jsonl
from training.stop import greedy_accuracy, stop_at_accuracy
from training.tasks import Problem, majority_vote
from training.toy_config import AGGREGATION_TARGETS, PLAIN_TARGETS, RECIPES, TOY_TASKS, RecipeConfig, recipe, toy_task
from training.toy_model import build_model, build_tokenizer
from training.toy_rl import run_rl_stage
from training.train import train

logger = logging.getLogger(__name__)


def _train(model: Path, rows: list[dict[str, Any]], out: Path, *, steps: int, batch_size: int,
           learning_rate: float, seed: int, callbacks: tuple[Any, ...] = ()) -> Path:
    data = out / "rows.jsonl"
    write_jsonl(rows, data)
    config = TrainConfig(
        model=str(model), data=str(data), output_dir=str(out), max_steps=steps, batch_size=batch_size,
        learning_rate=learning_rate, warmup=0.1, weight_decay=0.01, max_length=512, seed=seed, use_cpu=True,
        # Small model, short sequences: recomputing activations would only cost time.
        gradient_checkpointing=False, logging_steps=50, save_steps=10 * steps, save_total_limit=1)
    return train(config, callbacks)


async def _sample(model: Path, batches: list[tuple[list[Problem], int]], config: RecipeConfig) -> list[list[list[str]]]:
    """For each (problems, n) of `batches`, n answers to every problem sampled from `model` on vLLM (the
    serving backend; proposer prompts, proposal sampling), one engine for all."""
    if not any(problems for problems, _ in batches):
        return [[] for _ in batches]
    backend = VLLMBackend(engine_config(model, seed=config.seed))
    sampling = Sampling(temperature=config.proposal_temperature, top_p=config.proposal_top_p,
                        max_tokens=config.digits + 8)
    answers = []
    await backend.start()
    try:
        for problems, n in batches:
            rows = [{"messages": p.conversation, "reference": p.answer} for p in problems]
            samples = await on_policy_samples(backend, rows, n, sampling, concurrency=128)
            assert len(samples) == len(problems), "the backend refused some queries"
            answers.append([s.proposals for s in samples])
    finally:
        await backend.close()
    return answers


def engine_config(model: str | Path, *, seed: int = 0) -> EngineConfig:
    """The in-process vLLM engine for a toy checkpoint on a CPU host (float32, small KV cache)."""
    return EngineConfig(model=str(model), max_model_len=512, gpu_memory_utilization=0.3, dtype="float32",
                        seed=seed, max_num_seqs=256)


def consensus(drafts: Sequence[str]) -> str:
    """Digit by digit, what most `drafts` say (ties: the earliest draft's), as long as most drafts are
    (ties: the earliest); surrounding whitespace is ignored, and a draft says nothing past its end."""
    texts = [d.strip() for d in drafts]
    length = majority_vote([len(t) for t in texts]) or 0
    return "".join(majority_vote([t[i] if i < len(t) else None for t in texts]) or "" for i in range(length))


def aggregation_rows(problems: list[Problem], drafts: list[list[str]], *, max_proposals: int,
                     seed: int, targets: str = "reference") -> list[dict[str, Any]]:
    """One aggregation row a problem over a random 1..max_proposals of its drafts; the target is the
    reference answer, or with `targets="consensus"` what those drafts agree on (`consensus`; no row
    when that is empty)."""
    rng = random.Random(seed)
    rows = []
    for problem, candidates in zip(problems, drafts, strict=True):
        read = rng.sample(candidates, rng.randint(1, min(max_proposals, len(candidates))))
        target = consensus(read) if targets == "consensus" else problem.answer
        if target:  # drafts that said nothing teach nothing
            rows.append(aft_example(problem.conversation, read, target))
    return rows


def run_recipe(out_dir: str | Path, config: RecipeConfig = RECIPES["multiplication"], *,
               work_dir: str | Path | None = None) -> Path:
    """Tokenizer, tiny model, SFT, on-policy drafts, AFT, export: returns the exported AFT checkpoint
    (`out_dir`, with aft.json). Intermediate models and rows go to `work_dir` (default: OUT_DIR-work),
    the SFT model to WORK_DIR/sft/final, which `aft eval` takes as the baseline."""
    import torch

    torch.set_num_threads(config.threads)
    out = Path(out_dir)
    work = Path(work_dir) if work_dir else out.with_name(out.name + "-work")
    work.mkdir(parents=True, exist_ok=True)
    task = toy_task(config)
    timings: dict[str, float] = {}
    clock = time.monotonic()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        timings[name] = round(now - clock, 1)
        clock = now
        logger.info("toy recipe: %s took %.0f s", name, timings[name])

    tokenizer = build_tokenizer(work / "tokenizer", task, seed=config.seed)
    init = build_model(work / "init", tokenizer, config.shape, seed=config.seed)
    lap("tokenizer and model")

    sft_rows = [sft_example(p.conversation, p.answer)
                for p in task.training_problems(config.sft_examples, config.seed * 10 + 1)]
    dev = task.training_problems(config.sft_dev_problems, config.seed * 10 + 3)
    stop = stop_at_accuracy(lambda model: greedy_accuracy(model, tokenizer, task, dev,
                                                          max_new_tokens=config.digits + 4),
                            target=config.sft_target_accuracy, every=config.sft_check_every)
    noisy = config.sft_slip_rate > 0 and config.sft_noise_steps > 0
    sft = _train(init, sft_rows, work / ("sft-clean" if noisy else "sft"), steps=config.sft_steps,
                 batch_size=config.sft_batch_size, learning_rate=config.sft_learning_rate, seed=config.seed,
                 callbacks=(stop,))
    if noisy:
        slips = random.Random(config.seed * 10 + 4)
        noisy_rows = [sft_example(p.conversation, task.slipped(p.answer, config.sft_slip_rate, slips))
                      for p in task.training_problems(config.sft_noise_steps * config.sft_batch_size,
                                                      config.seed * 10 + 5)]
        sft = _train(sft, noisy_rows, work / "sft", steps=config.sft_noise_steps, batch_size=config.sft_batch_size,
                     learning_rate=config.sft_learning_rate, seed=config.seed)
    lap("SFT")

    queries = task.training_problems(config.aft_queries, config.seed * 10 + 2)
    on_policy = min(config.aft_on_policy_queries, config.aft_queries)
    plain = queries[:round(config.aft_sft_ratio * len(queries))]
    sampled = config.aft_plain_targets == "sampled"
    drafts, plain_answers = asyncio.run(_sample(sft, [(queries[:on_policy], config.aft_max_proposals),
                                                      (plain if sampled else [], 1)], config))
    rng = random.Random(config.seed)
    drafts += [[task.slipped(q.answer, config.aft_slip_rate, rng) for _ in range(config.aft_max_proposals)]
               for q in queries[on_policy:]]
    targets = [answers[0] for answers in plain_answers] if sampled else [p.answer for p in plain]
    rows = mix_sft(aggregation_rows(queries, drafts, max_proposals=config.aft_max_proposals, seed=config.seed,
                                    targets=config.aft_targets),
                   [sft_example(p.conversation, t) for p, t in zip(plain, targets, strict=True) if t.strip()],
                   config.aft_sft_ratio, config.seed)
    lap("on-policy drafts")

    aft = _train(sft, rows, work / "aft", steps=config.aft_steps, batch_size=config.aft_batch_size,
                 learning_rate=config.aft_learning_rate, seed=config.seed)
    lap("AFT")

    summary = {"builder": "training.toy", "task": task.name, "digits": config.digits,
               "aft_examples": config.aft_queries, "aft_on_policy_examples": on_policy,
               "sft_examples": len(rows) - config.aft_queries,
               "pretraining_examples": config.sft_examples, "sft_accuracy_by_step": stop.curve,
               "recipe": asdict(config)}
    # With an RL stage the AFT export is its start, and the stage's export is the recipe's.
    aft_out = work / "aft-export" if config.rl_steps > 0 else out
    export(aft, aft_out, base_model="from scratch (training.toy)", data_summary=summary, recommended={
        "proposals": config.proposals, "rounds": config.rounds, "proposal_temperature": config.proposal_temperature,
        "proposal_top_p": config.proposal_top_p, "temperature": config.temperature, "top_p": config.top_p,
        "early_exit": config.early_exit})
    lap("export")
    if config.rl_steps > 0:
        run_rl_stage(aft_out, out, config, work_dir=work, engine=engine_config)
        lap("RL stage")
    timings["total"] = round(sum(timings.values()), 1)
    (work / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    logger.info("toy recipe: %s in %.0f s", out, timings["total"])
    return out


def make_parser(prog: str = "aft toy") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Run the toy AFT recipe from scratch on this machine (tokenizer, tiny model, SFT, "
                               "on-policy drafts on vLLM, AFT, export with aft.json), then, unless --no-eval, "
                               "`aft eval` on held-out problems.")
    parser.add_argument("--task", choices=TOY_TASKS, default="multiplication",
                        help="The task and its recipe (RECIPES): multiplication, where the aggregator checks a "
                             "draft, or reversal, where drafts slip at random places and the aggregator combines "
                             "them (default multiplication).")
    parser.add_argument("--out", default="models/toy", help="The exported AFT checkpoint (default: models/toy).")
    parser.add_argument("--work", help="Intermediate models and rows (default: OUT-work).")
    parser.add_argument("--results", default="bench/results/toy", help="Where `aft eval` writes its results.")
    parser.add_argument("--eval", action=argparse.BooleanOptionalAction, default=True,
                        help="Evaluate the result (default: yes).")
    parser.add_argument("--problems", type=int, default=500,
                        help="Held-out problems for the evaluation (default 500: the recipe and its evaluation "
                             "take under 15 minutes on two CPU cores).")
    for name in ("sft_steps", "aft_steps", "aft_queries", "rl_queries", "rl_batch_size", "seed"):
        parser.add_argument("--" + name.replace("_", "-"), type=int,
                            help=f"Recipe: {name.replace('_', ' ')} (default: the task's recipe).")
    parser.add_argument("--plain-targets", choices=PLAIN_TARGETS,
                        help="Recipe: targets of the AFT stage's plain answering rows, the SFT model's own samples "
                             "or the correct answers (default: the task's recipe; RecipeConfig.aft_plain_targets "
                             "says why).")
    parser.add_argument("--aft-targets", choices=AGGREGATION_TARGETS,
                        help="Recipe: targets of the aggregation rows (default: the task's recipe; "
                             "RecipeConfig.aft_targets says why).")
    parser.add_argument("--rl-steps", type=int,
                        help="Recipe: GRPO steps after AFT, rewarded by the task's check (training/toy_rl.py; "
                             "default: the task's recipe, 0: no RL stage).")
    parser.add_argument("--rl-learning-rate", type=float, help="Recipe: the RL stage's learning rate.")
    parser.add_argument("--rl-proposals", type=positive_ints, metavar="N,N,...",
                        help="Recipe: the draft counts an RL prompt reads, one drawn a query (default: the recipe's).")
    parser.add_argument("--rl-from", metavar="AFT_DIR",
                        help="Run only the RL stage (--rl-steps, default 400), from this exported AFT checkpoint of "
                             "the task's recipe, into OUT; the evaluation's baseline is then AFT_DIR itself.")
    parser.add_argument("--force", action="store_true", help="Rebuild even when OUT already holds a checkpoint.")
    return parser


RL_FROM_STEPS = 400
"""GRPO steps of `aft toy --rl-from` when --rl-steps is not given."""

EVAL_SEED = 1000
"""Seed of the held-out problems and the engines in the toy's evaluation (`aft eval`'s default)."""


def evaluate_toy(out: Path, baseline: Path, results_dir: str | Path, *, problems: int,
                 config: RecipeConfig = RECIPES["multiplication"]) -> Path:
    """`aft eval`'s measurement of the toy AFT checkpoint `out` against its SFT model `baseline`, on the
    toy's engines, over the recipe's grid of N and rounds; writes the results and returns their directory."""
    draft, final = default_sampling(out, max_tokens=config.digits + 16)
    results = evaluate_checkpoints(
        str(out), str(baseline), toy_task(config), lambda path: engine_config(path, seed=EVAL_SEED),
        problems=problems, seed=EVAL_SEED, draft=draft, final=final,
        proposals=config.eval_proposals, rounds=config.eval_rounds, early_exit=config.eval_early_exit,
        subset=config.eval_subset)
    paths = write_results(results, results_dir)
    print(markdown_table(results))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return Path(results_dir)


def main(argv: Sequence[str] | None = None, *, prog: str = "aft toy") -> int:
    args = make_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    work = Path(args.work) if args.work else out.with_name(out.name + "-work")
    started = time.monotonic()
    rl_steps = args.rl_steps if args.rl_steps is not None or not args.rl_from else RL_FROM_STEPS
    config = recipe(args.task, sft_steps=args.sft_steps, aft_steps=args.aft_steps, aft_queries=args.aft_queries,
                    seed=args.seed, aft_plain_targets=args.plain_targets, aft_targets=args.aft_targets,
                    rl_steps=rl_steps, rl_queries=args.rl_queries, rl_batch_size=args.rl_batch_size,
                    rl_learning_rate=args.rl_learning_rate,
                    rl_proposals=tuple(args.rl_proposals) if args.rl_proposals else None)
    baseline = work / "sft" / "final"
    if args.force or not (out / "aft.json").is_file():
        if args.rl_from:
            run_rl_stage(args.rl_from, out, config, work_dir=work, engine=engine_config)
            baseline = Path(args.rl_from)
        else:
            run_recipe(out, config, work_dir=work)
    else:
        print(f"{out} holds a checkpoint already (--force rebuilds it)")
    print(f"recipe: {out} in {time.monotonic() - started:.0f} s")
    if args.eval:
        evaluate_toy(out, baseline, args.results, problems=args.problems, config=config)
        print(f"recipe and evaluation: {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":  # the vllm engine spawns processes that re-import __main__
    sys.exit(main(prog="python -m training.toy"))
