"""The toy recipe's settings: every knob of `RecipeConfig` with the reason for its value, and each
task's values (`RECIPES`). training/toy.py runs a recipe; docs/results.md holds what they measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from training.tasks import MultiplicationTask, ReversalTask, ToyTask
from training.toy_model import ModelShape


def toy_task(config: RecipeConfig) -> ToyTask:
    """The task `config` trains on."""
    return MultiplicationTask(config.digits) if config.task == "multiplication" else ReversalTask(config.digits)


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
    shape: ModelShape = field(default_factory=ModelShape)
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
    rl_steps: int = 0
    """GRPO steps after AFT (`aft toy --rl-steps`, training/toy_rl.py; 0: no RL stage; `make toy-rl` runs
    400). The aggregator is then trained by the task's own check on its own aggregations, not by
    imitation (docs/results.md)."""
    rl_queries: int = 2000
    """Training problems whose on-policy drafts (and round-1 aggregations) make the RL prompts; with hard
    and easy rows balanced, 440 to 1,300 prompts (fewer where the drafts are mostly wrong), which 400
    steps of 4 read one to four times. Measured at three seeds of both tasks (docs/results.md): 600
    problems and 40 steps kept each model where AFT left it; 2,000 and 400 steps lifted reversal's N = 5
    mean from 82.1% to 87.5% (91.3% with `rl_proposals` 1, 3, 5) and multiplication's from 81.5% to 88.5%."""
    rl_proposals: tuple[int, ...] = (3, 5, 8)
    """Each RL prompt reads N of these drafts (drawn a query). Multiplication: 3, 5, 8, the widths its AFT
    stage (1 to 4 drafts) did not train well. Reversal: 1, 3, 5, where its seeds differ (whether the
    aggregator repairs one draft); measured at three seeds, 400 steps (docs/results.md): N = 5 91.3% on
    the mean against 87.5% with 3, 5, 8, and N = 8, never trained, 94.2% against 91.7%."""
    rl_hard_share: float = 0.5
    """Share of RL prompts whose drafts are mostly wrong (training/rl_data.py RLMix)."""
    rl_round2_share: float = 0.3
    """Share of RL prompts over round-1 aggregations: the second round, never seen in imitation."""
    rl_subset_share: float = 0.3
    """Share of RL prompts that read `rl_subset_k` of the N drafts."""
    rl_subset_k: int = 3
    rl_num_generations: int = 8
    """Completions sampled a prompt; their rewards are compared within the group."""
    rl_batch_size: int = 32
    """Completions a step (4 prompts of 8): a GRPO step took 1.3-1.8 s on one core (reversal, 400 steps)."""
    rl_learning_rate: float = 3e-5
    """Measured on multiplication, seed 0, 40 steps (docs/results.md): 2e-4 gained 13 points at N = 8 and
    lost 2 to 4 everywhere else; 3e-5 gained 6 at N = 8 and lost nothing outside the intervals. On
    reversal, seed 2, 400 steps: 1e-4 gained less than 3e-5 wherever the service reads three drafts or more. A step
    learns from about one prompt in four (the others' completions are all right or all wrong), and
    Adam turns that noise into full-size steps."""
    rl_temperature: float = 1.0
    """Sampling of the completions during RL: the drafts' temperature, so a group differs enough to compare."""
    rl_beta: float = 0.0
    """KL penalty towards the AFT model (0: none, TRL's default)."""
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
        aft_steps=400, eval_rounds=(1,), eval_subset=(3,), rl_proposals=(1, 3, 5)),
}
"""Each task's recipe: its RecipeConfig with the values measured for it (docs/results.md)."""


def recipe(task: str, **overrides: Any) -> RecipeConfig:
    """`task`'s recipe with `overrides` (None: keep the recipe's); SFT sees each example once."""
    config = replace(RECIPES[task], **{k: v for k, v in overrides.items() if v is not None})
    return replace(config, sft_examples=config.sft_steps * config.sft_batch_size)
