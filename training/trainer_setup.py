"""What SFT (training/train.py) and GRPO (training/grpo.py) runs set up alike: the trainer's
arguments from TrainConfig, precision, tokenizer, LoRA, and the checkpoint to resume from."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.config import TrainConfig

if TYPE_CHECKING:
    from peft import LoraConfig
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)


def training_arguments(config: TrainConfig) -> dict[str, Any]:
    """The transformers TrainingArguments both TRL configs take from TrainConfig: optimizer, schedule,
    precision, logging and checkpoints."""
    extra: dict[str, Any] = {"save_total_limit": config.save_total_limit} if config.save_total_limit else {}
    return dict(
        output_dir=config.output_dir, num_train_epochs=config.epochs, max_steps=config.max_steps,
        learning_rate=config.learning_rate, per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accumulation, warmup_steps=config.warmup,
        lr_scheduler_type=config.scheduler, weight_decay=config.weight_decay, seed=config.seed,
        gradient_checkpointing=config.gradient_checkpointing, bf16=bf16_enabled(config.bf16), use_cpu=config.use_cpu,
        logging_steps=config.logging_steps, save_steps=config.save_steps, report_to=config.report_to,
        model_init_kwargs={"dtype": config.model_dtype}, **extra)


def bf16_enabled(setting: str) -> bool:
    """bf16 mixed precision for "true"/"false"/"auto"; auto: a CUDA device that has bf16."""
    if setting != "auto":
        return setting == "true"
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def load_tokenizer(config: TrainConfig) -> PreTrainedTokenizerBase:
    """The model's tokenizer, with the configured chat template; refuses one that has none."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(config.model)
    if config.chat_template:
        tokenizer.chat_template = Path(config.chat_template).read_text(encoding="utf-8")
    if not tokenizer.chat_template:
        # Training and serving both render rows with the chat template; without one there is no format.
        raise ValueError(f"{config.model} has no chat template: give one with --chat-template FILE.jinja")
    return tokenizer


def lora_config(config: TrainConfig) -> LoraConfig | None:
    """The peft LoRA config when the run trains adapters, else None (full fine-tuning)."""
    if not config.lora:
        return None
    from peft import LoraConfig

    targets = config.lora_target_modules
    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules="all-linear" if targets == ["all-linear"] else targets, task_type="CAUSAL_LM")


def resume_checkpoint(config: TrainConfig) -> str | None:
    """The checkpoint to resume from: config.resume, with 'latest' looked up in output_dir."""
    if config.resume is None:
        return None
    if config.resume != "latest":
        return config.resume
    from transformers.trainer_utils import get_last_checkpoint

    last: str | None = (get_last_checkpoint(config.output_dir)  # type: ignore[no-untyped-call]
                        if Path(config.output_dir).is_dir() else None)
    logger.info("resume: %s", last or f"no checkpoint in {config.output_dir}, starting fresh")
    return last
