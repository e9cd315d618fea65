"""Shared data for the training tests (imported by name: tests/training is on sys.path under pytest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from serving.format import Message
from training.config import TrainConfig
from training.rows import Row, aft_example, sft_example

FIXTURES = Path(__file__).parent / "fixtures"


def arithmetic_rows(count: int = 16) -> list[Row]:
    """Small AFT and SFT rows over arithmetic questions: drafts disagree, the target is right."""
    rows = []
    for i in range(count):
        a, b = i % 7 + 1, i % 5 + 2
        conversation: list[Message] = [{"role": "user", "content": f"What is {a} plus {b}?"}]
        drafts = [f"{a + b}", f"{a + b + 1}", f"I think {a + b}"]
        target = f"The answer is {a + b}."
        rows.append(aft_example(conversation, drafts, target) if i % 4 else sft_example(conversation, target))
    return rows


def tiny_config(model: Path, data: Path, output: Path, **overrides: Any) -> TrainConfig:
    """A run of a few seconds: a high learning rate so ten steps show a clear fall."""
    settings: dict[str, Any] = {
        "model": str(model), "data": str(data), "output_dir": str(output), "max_steps": 10, "learning_rate": 3e-3,
        "batch_size": 4, "warmup": 0, "scheduler": "constant", "use_cpu": True, "bf16": "false",
        "gradient_checkpointing": False, "logging_steps": 1, "save_steps": 1000, "max_length": 1024}
    return TrainConfig(**(settings | overrides))
