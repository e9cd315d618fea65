"""What SFT (training/train.py) and GRPO (training/grpo.py) runs set up alike: precision, tokenizer,
LoRA, and the checkpoint to resume from."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from training.config import TrainConfig

if TYPE_CHECKING:
    from peft import LoraConfig
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)


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
