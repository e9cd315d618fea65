"""RLConfig: what `aft train --method grpo` is told beyond TrainConfig (the reward and the sampling).

Parsed with TrainConfig by the same TrlParser (training/config.py): the same YAML file, the same
flags. Each field is refused by name under `--method sft`, where it would do nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo")
SCALE_REWARDS = ("group", "batch", "none")


@dataclass
class RLConfig:
    """GRPO (TRL's GRPOTrainer) on rows of `aft data rl`: for each aggregation prompt, a group of
    completions sampled from the model being trained, each rewarded by a verifiable check."""

    reward: str = field(default="exact", metadata={
        "help": "The check of a completion against the row's reward_field: task:multiplication or task:reversal "
                "(the toy tasks' check), exact, regex:PATTERN (its first group, or the whole match, against the "
                "field), math (math-verify), or MODULE:FUNCTION, a function f(response, reference) -> float."})
    reward_field: str = field(default="answer", metadata={"help": "The rows' field holding the reference answer."})
    format_reward: float = field(default=0.0, metadata={
        "help": "Reward of a wrong answer in the right form (a number, a regex match, a parsable expression); "
                "SSA uses 0.05."})
    num_generations: int = field(default=8, metadata={
        "help": "Completions sampled a prompt (the group whose rewards are compared); batch_size x "
                "grad_accumulation must be a multiple of it."})
    max_completion_length: int = field(default=512, metadata={"help": "Token limit of each sampled completion."})
    rl_temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the completions."})
    rl_top_p: float = field(default=1.0, metadata={"help": "Sampling top_p of the completions."})
    beta: float = field(default=0.0, metadata={
        "help": "KL penalty towards the starting model (0: no reference model is loaded)."})
    epsilon: float = field(default=0.2, metadata={"help": "Clipping range of the policy ratio."})
    num_iterations: int = field(default=1, metadata={"help": "Optimizer passes over each generated batch."})
    loss_type: str = field(default="dapo", metadata={
        "help": "TRL's loss normalization (dapo: by the tokens of the batch, no length bias).",
        "choices": list(LOSS_TYPES)})
    scale_rewards: str = field(default="group", metadata={
        "help": "Advantages divided by the group's reward std (group), the batch's (batch), or not (none).",
        "choices": list(SCALE_REWARDS)})

    def __post_init__(self) -> None:
        if self.num_generations < 2:
            raise ValueError("num_generations must be >= 2: GRPO compares completions of one prompt")
        if self.max_completion_length < 1:
            raise ValueError("max_completion_length must be >= 1")

    def changed(self) -> list[str]:
        """The fields set away from their defaults."""
        default = RLConfig()
        return [f.name for f in fields(self) if getattr(self, f.name) != getattr(default, f.name)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
