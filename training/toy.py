"""`aft toy`: the whole AFT recipe on a task with checkable answers, from scratch, on a laptop CPU.

Two tasks (training/tasks.py), each with its recipe (`RECIPES`):

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
1. tokenizer: byte-level BPE trained here, digits always single tokens (a digit slip is one
   token, and a draft as long in tokens as the answer), the aggregation template's words in its
   corpus (so serving/format.py's long prompt costs a few dozen tokens, not hundreds);
2. a random-weight Llama (head_dim 64, vLLM's CPU attention needs it);
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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from serving.backends.base import Sampling
from serving.backends.vllm import EngineConfig, VLLMBackend
from serving.format import Message, aggregator_messages, proposer_messages
from training.config import TrainConfig
from training.data import on_policy_samples
from training.evaluate import default_sampling, evaluate_checkpoints
from training.export import export
from training.results import markdown_table, write_results
from training.rows import aft_example, mix_sft, sft_example, write_jsonl
from training.stop import greedy_accuracy, stop_at_accuracy
from training.tasks import MultiplicationTask, Problem, ReversalTask, Task, majority_vote
from training.tiny import CHAT_TEMPLATE, SPECIAL_TOKENS
from training.train import train

logger = logging.getLogger(__name__)


class ToyTask(Task, Protocol):
    """A task the toy recipe trains on: held-out and training problems, and slipped answers."""

    def training_problems(self, n: int, seed: int) -> list[Problem]:
        """`n` training problems (never held out), the same ones for the same seed."""
        ...

    def slipped(self, answer: str, rate: float, rng: random.Random) -> str:
        """`answer` with each digit wrong with chance `rate`, as a draft that slips."""
        ...


def toy_task(config: RecipeConfig) -> ToyTask:
    """The task `config` trains on."""
    return MultiplicationTask(config.digits) if config.task == "multiplication" else ReversalTask(config.digits)


def _corpus(task: ToyTask, lines: int, seed: int) -> list[str]:
    """Message texts as training and serving render them: proposer and aggregator system
    messages, questions and answers."""
    rng = random.Random(seed)
    texts: list[str] = []
    for _ in range(lines):
        problem, *others = task.training_problems(rng.randint(2, 9), rng.randrange(2**32))
        drafts = [other.answer for other in others]
        messages: list[Message] = [*aggregator_messages(problem.conversation, drafts),
                                   *proposer_messages(problem.conversation)]
        texts += [m["content"] for m in messages] + [problem.answer]
    return texts


def build_tokenizer(path: str | Path, task: ToyTask, *, vocab_size: int = 1024, seed: int = 0) -> Any:
    """Train and save the toy's tokenizer (with training.tiny's chat template); returns it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    # Digits are split off one by one before anything else; the rest is byte-level BPE
    # without the usual word-splitting regex, so frequent phrases of the aggregation
    # template become single tokens.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(_corpus(task, 400, seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|bos|>",  # type: ignore[no-untyped-call]
                                   eos_token="<|eos|>", pad_token="<|pad|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    return fast


@dataclass(frozen=True)
class ModelShape:
    """The toy model's size."""

    hidden_size: int = 128
    layers: int = 3
    heads: int = 4
    """Attention heads of 64 dimensions each (more than hidden_size / 64: measured, 4 heads
    escape the early loss plateau of this task in half the steps of 2)."""
    max_positions: int = 2048
    """Context the checkpoint declares (the service's CPU flags ask for 2048). Training sees at most
    ~170 tokens (8 drafts); the aggregation prompt with 16 drafts of 8 digits is ~250."""


def build_model(path: str | Path, tokenizer: Any, shape: ModelShape, *, seed: int = 0) -> Path:
    """Save a random-weight Llama for `tokenizer` (head_dim 64) with the tokenizer to `path`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    end_of_turn = tokenizer.convert_tokens_to_ids("<|end|>")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=shape.hidden_size, intermediate_size=4 * shape.hidden_size,
        num_hidden_layers=shape.layers, num_attention_heads=shape.heads, head_dim=64,
        num_key_value_heads=shape.heads, max_position_embeddings=shape.max_positions,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=[tokenizer.eos_token_id, end_of_turn],
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)  # type: ignore[no-untyped-call]
    model.generation_config.eos_token_id = config.eos_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)


PLAIN_TARGETS = ("sampled", "reference")
"""What the AFT stage's plain rows can teach (RecipeConfig.aft_plain_targets)."""
AGGREGATION_TARGETS = ("reference", "consensus")
"""What the AFT stage's aggregation rows teach (RecipeConfig.aft_targets)."""
TOY_TASKS = ("multiplication", "reversal")
"""The tasks the toy recipe trains on (`aft toy --task`), each with its RECIPES entry."""


@dataclass(frozen=True)
class RecipeConfig:
    """Every knob of the toy recipe; the defaults are the measured multiplication run, and `RECIPES`
    holds each task's (docs/results.md)."""

    task: str = "multiplication"
    """"multiplication" or "reversal" (training/tasks.py)."""
    digits: int = 8
    """Digits of the number multiplied, or of the sequence reversed."""
    shape: ModelShape = ModelShape()
    seed: int = 0
    sft_examples: int = 51_200
    """Distinct SFT problems (one pass: sft_steps x sft_batch_size)."""
    sft_steps: int = 800
    """At most; SFT stops early once the model is as good as `sft_target_accuracy`."""
    sft_batch_size: int = 64
    sft_learning_rate: float = 2e-3
    sft_target_accuracy: float = 0.75
    """Greedy accuracy on `sft_dev_problems` training problems, measured every `sft_check_every` steps,
    at which SFT stops: the toy needs a model that is good but imperfect, and without the stop the
    accuracy after a fixed number of steps depends on the seed (measured 75%, 88% and 80% at 800
    steps; with it 74-79% at four seeds)."""
    sft_dev_problems: int = 256
    sft_slip_rate: float = 0.0
    """After SFT, `sft_noise_steps` more steps on targets whose digits are each replaced by another with
    this chance (0: none): the model keeps the task it learned, but its samples now slip at random
    places, independently of each other, as if it had learned from transcripts with typos. (Trained
    on such targets from the start, the model learned the task itself more slowly.)"""
    sft_noise_steps: int = 0
    """Steps of that phase (0: none)."""
    sft_check_every: int = 25
    aft_queries: int = 12_000
    """Training problems with one aggregation row each (with the plain rows, 2.6 passes at aft_steps x
    aft_batch_size). Off-policy queries cost nothing to make; whether the AFT stage also teaches the
    model to answer directly, which leaves the vote over its drafts little room, did not depend on
    4,000 or 12,000 in the runs measured (README, the toy recipe)."""
    aft_on_policy_queries: int = 1000
    """Queries whose drafts the SFT model writes (on vLLM, about a minute); the others get the reference
    with carry slips, off-policy drafts that copying cannot fix (see `aft_slip_rate`)."""
    aft_slip_rate: float = 0.3
    """Per-digit chance of a carry slip in the off-policy drafts. The model's own drafts are right
    on most digits, so on them alone AFT learns to copy a draft (measured: no gain over greedy); with
    slips it must check each digit against the question, which a draft makes local: knowing the
    next product digit, the carry into a digit follows from one operand digit, while writing the
    answer from the question alone needs the carry of the whole rest of the number."""
    aft_max_proposals: int = 4
    """Each aggregation row reads a random 1..this many of the query's drafts, so one model serves every N."""
    aft_targets: str = "reference"
    """What the aggregation rows teach: "reference", the correct answer (the paper's AFT), or "consensus",
    digit by digit the answer most of the row's drafts give (ties: the first draft's). Measured on
    reversal at three seeds (docs/results.md): consensus targets teach a digit-by-digit vote, 70.7%
    at N = 5 on average against 77.3% for the reference, which also teaches the aggregator to weigh
    the drafts against the question (one draft read once: 3.5% against 39.4%)."""
    aft_sft_ratio: float = 0.25
    """Plain answering rows per aggregation row, so the AFT model still answers directly."""
    aft_plain_targets: str = "sampled"
    """What the plain rows teach: "sampled", the SFT model's own answer (one sample at temperature 1,
    drawn on vLLM with the drafts), which keeps direct answering where SFT left it (measured: within
    4 points of the SFT model's one sample, either way, at four seeds), so the gain after AFT is the
    aggregation's; or "reference", the correct answer, which also trains the task itself, by chance:
    AFT then answered directly at 77% or 89% depending on the run, a stronger model, but at 89% the
    vote over its own drafts left aggregation ~5 points (README, the toy recipe)."""
    aft_steps: int = 1200
    aft_batch_size: int = 32
    aft_learning_rate: float = 2e-3
    proposal_temperature: float = 1.0
    proposal_top_p: float = 1.0
    temperature: float = 0.7
    """Final answers and single samples (the service's default)."""
    top_p: float = 1.0
    proposals: int = 3
    rounds: int = 2
    early_exit: float | None = None
    """Recommended in aft.json (aft.early_exit) where `aft eval` measured it no worse than the full pipeline."""
    eval_proposals: tuple[int, ...] = (1, 2, 3, 4)
    """The N `aft eval` measures (evaluate_toy)."""
    eval_rounds: tuple[int, ...] = (1, 2)
    eval_early_exit: tuple[float, ...] = (1.0,)
    """Early-exit shares `aft eval` measures beside the full pipeline (1.0: all drafts agree)."""
    eval_subset: tuple[int, ...] = (2,)
    """Subset sizes K `aft eval` measures beside the full pipeline (where K < N)."""
    """Recommended in aft.json: the paper's reference default (num_aggregation = 2); a second round
    added 0.4 to 4.0 points over one at N = 3 at the four seeds measured, and 5 in a second run of
    seed 0, whose one round fell short of the bar (README, the toy recipe)."""
    threads: int = 1
    """torch threads for training. One: on a small shared host a second thread mostly spins."""

    def __post_init__(self) -> None:
        if self.aft_plain_targets not in PLAIN_TARGETS:
            raise ValueError(f"aft_plain_targets must be one of {PLAIN_TARGETS}, got {self.aft_plain_targets!r}")
        if self.aft_targets not in AGGREGATION_TARGETS:
            raise ValueError(f"aft_targets must be one of {AGGREGATION_TARGETS}, got {self.aft_targets!r}")
        if self.task not in TOY_TASKS:
            raise ValueError(f"task must be one of {TOY_TASKS}, got {self.task!r}")


RECIPES = {
    # Early exit when all drafts agree: measured within a point of the full pipeline at a third fewer
    # tokens (docs/results.md); on reversal drafts never agree.
    "multiplication": RecipeConfig(early_exit=1.0),
    "reversal": RecipeConfig(
        task="reversal", digits=16, sft_target_accuracy=0.9, sft_slip_rate=0.2, sft_noise_steps=150,
        aft_slip_rate=0.2,
        aft_max_proposals=8, proposals=5, rounds=1, eval_proposals=(1, 3, 5, 8),
        aft_steps=400, eval_rounds=(1,), eval_subset=(3,)),
}
"""Each task's recipe: its RecipeConfig with the values measured for it (docs/results.md)."""


def recipe(task: str, **overrides: Any) -> RecipeConfig:
    """`task`'s recipe with `overrides` (None: keep the recipe's); SFT sees each example once."""
    config = replace(RECIPES[task], **{k: v for k, v in overrides.items() if v is not None})
    return replace(config, sft_examples=config.sft_steps * config.sft_batch_size)


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
    length = int(majority_vote([str(len(t)) for t in texts]) or 0)
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


def run_recipe(out_dir: str | Path, config: RecipeConfig = RecipeConfig(), *,
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
    export(aft, out, base_model="from scratch (training.toy)", data_summary=summary, recommended={
        "proposals": config.proposals, "rounds": config.rounds, "proposal_temperature": config.proposal_temperature,
        "proposal_top_p": config.proposal_top_p, "temperature": config.temperature, "top_p": config.top_p,
        "early_exit": config.early_exit})
    lap("export")
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
    for name in ("sft_steps", "aft_steps", "aft_queries", "seed"):
        parser.add_argument("--" + name.replace("_", "-"), type=int,
                            help=f"Recipe: {name.replace('_', ' ')} (default: the task's recipe).")
    parser.add_argument("--plain-targets", choices=PLAIN_TARGETS,
                        help="Recipe: targets of the AFT stage's plain answering rows, the SFT model's own samples "
                             "or the correct answers (default: the task's recipe; RecipeConfig.aft_plain_targets "
                             "says why).")
    parser.add_argument("--aft-targets", choices=AGGREGATION_TARGETS,
                        help="Recipe: targets of the aggregation rows (default: the task's recipe; "
                             "RecipeConfig.aft_targets says why).")
    parser.add_argument("--force", action="store_true", help="Rebuild even when OUT already holds a checkpoint.")
    return parser


EVAL_SEED = 1000
"""Seed of the held-out problems and the engines in the toy's evaluation (`aft eval`'s default)."""


def evaluate_toy(out: Path, baseline: Path, results_dir: str | Path, *, problems: int,
                 config: RecipeConfig = RecipeConfig()) -> Path:
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
    config = recipe(args.task, sft_steps=args.sft_steps, aft_steps=args.aft_steps, aft_queries=args.aft_queries,
                    seed=args.seed, aft_plain_targets=args.plain_targets, aft_targets=args.aft_targets)
    if args.force or not (out / "aft.json").is_file():
        run_recipe(out, config, work_dir=work)
    else:
        print(f"{out} holds a checkpoint already (--force rebuilds it)")
    print(f"recipe: {out} in {time.monotonic() - started:.0f} s")
    if args.eval:
        evaluate_toy(out, work / "sft" / "final", args.results, problems=args.problems, config=config)
        print(f"recipe and evaluation: {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":  # the vllm engine spawns processes that re-import __main__
    sys.exit(main(prog="python -m training.toy"))
