"""`aft train --method grpo`: train the aggregator by a verifiable reward with TRL's GRPOTrainer.

    aft train --method grpo --model models/toy --data data/rl.jsonl --reward task:multiplication \\
        --num-generations 8 --batch-size 32 --max-steps 200 --learning-rate 1e-4

It starts from an AFT checkpoint (imitation first, then reward, as AggLM and SSA do). Each row of
`aft data rl` (training/rl_data.py) is an aggregation prompt over on-policy drafts, rendered by
serving/format.py; GRPOTrainer samples `num_generations` completions of it from the model being
trained (transformers' generate: no vLLM needed, so it runs on a CPU), rewards each with the
check (training/rewards.py), and moves the policy towards the completions better than their
group's mean. LoRA, full fine-tuning, bf16, checkpoints and `resume` are TrainConfig's, as for
SFT; the final model goes to OUTPUT_DIR/final with aft_train.json (the RL fields included).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.config import TRAIN_RECORD, TrainConfig
from training.rewards import Check, make_check, reward_function
from training.rl_config import RLConfig
from training.rl_data import validate_rl_rows
from training.rows import DataError, read_jsonl
from training.trainer_setup import load_tokenizer, lora_config, resume_checkpoint, training_arguments

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, TrainerCallback
    from trl.trainer.grpo_config import GRPOConfig
    from trl.trainer.grpo_trainer import GRPOTrainer

logger = logging.getLogger(__name__)


def grpo_config(config: TrainConfig, rl: RLConfig) -> GRPOConfig:
    """TRL's GRPOConfig for this run: TrainConfig's optimizer and bookkeeping, RLConfig's sampling and loss."""
    from trl.trainer.grpo_config import GRPOConfig

    per_step = config.batch_size * config.grad_accumulation
    if per_step % rl.num_generations:
        raise ValueError(f"batch_size x grad_accumulation ({per_step}) must be a multiple of num_generations "
                         f"({rl.num_generations}): a step holds whole groups")
    return GRPOConfig(
        **training_arguments(config),
        num_generations=rl.num_generations, max_completion_length=rl.max_completion_length,
        temperature=rl.rl_temperature, top_p=rl.rl_top_p, beta=rl.beta, epsilon=rl.epsilon,
        num_iterations=rl.num_iterations, loss_type=rl.loss_type, scale_rewards=rl.scale_rewards,
        # The rows' other fields (answer, round, hard...) reach the reward function.
        remove_unused_columns=False)


def _fitting(rows: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase, max_length: int | None) -> list[Any]:
    """The rows whose rendered prompt has at most max_length tokens (GRPOTrainer truncates no prompt)."""
    if max_length is None:
        return rows
    def size(prompt: list[dict[str, str]]) -> int:
        text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        assert isinstance(text, str)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    kept = [row for row in rows if size(row["prompt"]) <= max_length]
    if len(kept) < len(rows):
        logger.warning("%d of %d rows have prompts longer than max_length=%d tokens and were dropped",
                       len(rows) - len(kept), len(rows), max_length)
    if not kept:
        raise ValueError(f"no row's prompt fits max_length={max_length} tokens")
    return kept


def check_inputs(config: TrainConfig, rl: RLConfig) -> tuple[list[dict[str, Any]], Check]:
    """The rows of config.data and the reward's check; ValueError (DataError) names what is wrong."""
    rows = read_jsonl(config.data)
    validate_rl_rows(rows, source=config.data)
    missing = next((i for i, row in enumerate(rows, 1) if rl.reward_field not in row), None)
    if missing is not None:
        raise DataError(missing, f"no {rl.reward_field!r} field for the reward to read", source=config.data)
    return rows, make_check(rl.reward, format_reward=rl.format_reward)


def build_grpo_trainer(config: TrainConfig, rl: RLConfig, callbacks: Sequence[TrainerCallback] = ()) -> GRPOTrainer:
    """A GRPOTrainer over the checked rows of config.data, rewarded by rl.reward."""
    from datasets import Dataset
    from trl.trainer.grpo_trainer import GRPOTrainer

    rows, check = check_inputs(config, rl)
    tokenizer = load_tokenizer(config)
    dataset = Dataset.from_list(_fitting(rows, tokenizer, config.max_length))
    return GRPOTrainer(model=config.model, reward_funcs=reward_function(check, rl.reward_field),
                       args=grpo_config(config, rl), train_dataset=dataset, processing_class=tokenizer,
                       peft_config=lora_config(config), callbacks=list(callbacks) or None)


def train_grpo(config: TrainConfig, rl: RLConfig, callbacks: Sequence[TrainerCallback] = ()) -> Path:
    """Run GRPO; returns OUTPUT_DIR/final (full weights or the LoRA adapter, with the tokenizer and
    aft_train.json). OUTPUT_DIR/trainer_state.json keeps the reward by step."""
    trainer = build_grpo_trainer(config, rl, callbacks)
    trainer.train(resume_from_checkpoint=resume_checkpoint(config))
    trainer.save_state()
    final = Path(config.output_dir) / "final"
    trainer.save_model(str(final))
    if trainer.is_world_process_zero():
        (final / TRAIN_RECORD).write_text(json.dumps({**config.to_dict(), "rl": rl.to_dict()}, indent=2) + "\n")
    return final
