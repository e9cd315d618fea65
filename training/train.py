"""`aft train`: fine-tune a model on AFT rows with TRL's SFTTrainer, the loss on the completion only.

    aft train --config training/configs/tiny-cpu.yaml --max-steps 20
    accelerate launch -m training.train --config training/configs/llama31-8b-lora.yaml   # several GPUs

The rows are TRL's conversational prompt/completion format (training/rows.py), so the
prompt (query and drafts) is masked out of the loss and the model learns to write the
aggregation given them. Full fine-tuning or LoRA; checkpoints every `save_steps` make a
run resumable (`resume: latest`). The final model goes to OUTPUT_DIR/final with its
tokenizer and this run's config (aft_train.json), which `aft export` reads.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from training.config import TRAIN_RECORD, TrainConfig, parse_run
from training.export import export
from training.rows import read_jsonl, validate_jsonl
from training.trainer_setup import bf16_enabled, load_tokenizer, lora_config, resume_checkpoint, training_arguments

if TYPE_CHECKING:
    from transformers import TrainerCallback
    from trl.trainer.sft_config import SFTConfig
    from trl.trainer.sft_trainer import SFTTrainer

__all__ = ["bf16_enabled", "build_trainer", "load_tokenizer", "lora_config", "main", "resume_checkpoint", "sft_config",
           "train"]

logger = logging.getLogger(__name__)


def sft_config(config: TrainConfig) -> SFTConfig:
    """TRL's SFTConfig for this run."""
    from trl.trainer.sft_config import SFTConfig

    return SFTConfig(
        **training_arguments(config), max_length=config.max_length,
        # Explicit although it is TRL's default for prompt/completion rows: the loss must never
        # fall on the drafts or the template, only on the aggregation.
        completion_only_loss=True,
    )


def build_trainer(config: TrainConfig, callbacks: Sequence[TrainerCallback] = ()) -> SFTTrainer:
    """An SFTTrainer over the validated rows (tokenized, labels masked); `train` runs it."""
    from datasets import Dataset
    from trl.trainer.sft_trainer import SFTTrainer

    validate_jsonl(config.data)
    dataset = Dataset.from_list(read_jsonl(config.data))
    trainer = SFTTrainer(model=config.model, args=sft_config(config), train_dataset=dataset,
                         processing_class=load_tokenizer(config), peft_config=lora_config(config),
                         callbacks=list(callbacks) or None)
    assert isinstance(trainer.train_dataset, Dataset)  # built from a list: a map-style dataset
    kept = len(trainer.train_dataset)
    if kept < len(dataset):
        logger.warning("%d of %d examples had no completion token within max_length=%s and were dropped",
                       len(dataset) - kept, len(dataset), config.max_length)
    return trainer


def train(config: TrainConfig, callbacks: Sequence[TrainerCallback] = ()) -> Path:
    """Run the training; returns OUTPUT_DIR/final (full weights, or the LoRA adapter, with the tokenizer).

    OUTPUT_DIR/trainer_state.json keeps the run's log (loss by step). `callbacks` join the trainer's
    (a callback that sets control.should_training_stop ends the run early, the model saved as it is).
    """
    trainer = build_trainer(config, callbacks)
    trainer.train(resume_from_checkpoint=resume_checkpoint(config))
    trainer.save_state()
    final = Path(config.output_dir) / "final"
    trainer.save_model(str(final))  # every rank: sharded (FSDP, ZeRO-3) weights are gathered here
    if trainer.is_world_process_zero():
        (final / TRAIN_RECORD).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    return final


def main(argv: Sequence[str] | None = None, *, prog: str = "aft train") -> int:
    config, rl = parse_run(argv, prog)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if config.method == "grpo":
            from training.grpo import check_inputs  # the rows and the reward, before any model loads

            check_inputs(config, rl)
        else:
            validate_jsonl(config.data)
    except (ValueError, OSError) as exc:  # DataError is a ValueError: names the bad line
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    if config.method == "grpo":
        from training.grpo import train_grpo

        final = train_grpo(config, rl)
    else:
        final = train(config)
    print(f"model: {final}")
    # Under `accelerate launch` every rank runs main; one export is enough.
    if config.export_dir and os.environ.get("RANK", "0") == "0":
        print(f"exported: {export(final, config.export_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m training.train"))

