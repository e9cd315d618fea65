"""TrainConfig: everything `aft train` can be told, from a YAML file and flags (flags win).

TRL style: one dataclass, every field with help text; the flags of `aft train` are
generated from it, so `aft train --help` and a YAML file name the same things.
Importing this module is cheap (no torch): `aft serve` never pays for training.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


@dataclass
class TrainConfig:
    """How to fine-tune a model on AFT rows (see training/rows.py) with TRL's SFTTrainer."""

    model: str = field(metadata={"help": "Base model to fine-tune: checkpoint directory or hub id."})
    data: str = field(metadata={"help": "Training rows: a JSONL file written by `aft data` (validated first)."})
    output_dir: str = field(default="runs/aft", metadata={
        "help": "Checkpoints go to OUTPUT_DIR/checkpoint-*, the final model to OUTPUT_DIR/final."})
    export_dir: str | None = field(default=None, metadata={
        "help": "After training, export a checkpoint `aft serve` loads as it is (LoRA merged, aft.json) here."})
    chat_template: str | None = field(default=None, metadata={
        "help": "Jinja chat template file for a tokenizer without one (e.g. a base model); saved with the model."})

    epochs: float = field(default=3.0, metadata={"help": "Passes over the data (ignored when max_steps > 0)."})
    max_steps: int = field(default=-1, metadata={"help": "Optimizer steps to run; > 0 overrides epochs."})
    learning_rate: float = field(default=2e-5, metadata={
        "help": "Peak learning rate (AdamW). Typical: 1e-5..2e-5 full fine-tuning, 1e-4..2e-4 LoRA."})
    batch_size: int = field(default=8, metadata={"help": "Examples per device per forward pass."})
    grad_accumulation: int = field(default=1, metadata={
        "help": "Forward passes per optimizer step; the global batch is batch_size x this x devices."})
    max_length: int | None = field(default=4096, metadata={
        "help": "Longest tokenized example (prompt + completion). Longer ones are truncated at the end, and "
                "dropped when no completion token is left. AFT prompts hold N drafts: size it for them."})
    warmup: float = field(default=0.03, metadata={
        "help": "Linear warmup: a fraction of the total steps if < 1, else a number of steps."})
    scheduler: str = field(default="cosine", metadata={
        "help": "Learning rate schedule after warmup (transformers SchedulerType: cosine, linear, constant...)."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    seed: int = field(default=42, metadata={"help": "Seed of data order, LoRA initialization and dropout."})

    lora: bool = field(default=False, metadata={
        "help": "Train LoRA adapters (peft) instead of every weight; export merges them into the base."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA path."})
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"], metadata={
        "help": "Modules that get adapters: names (q_proj v_proj ...) or all-linear."})

    gradient_checkpointing: bool = field(default=True, metadata={
        "help": "Recompute activations in the backward pass: far less memory for ~30% more compute."})
    bf16: str = field(default="auto", metadata={
        "help": "bf16 mixed precision; auto: where the hardware has it (CUDA with bf16), else fp32.",
        "choices": ["auto", "true", "false"]})
    model_dtype: str = field(default="float32", metadata={
        "help": "dtype the model is loaded in. float32 keeps full-precision master weights under bf16 autocast; "
                "bfloat16 halves the memory (usual for LoRA); auto: the checkpoint's.",
        "choices": ["float32", "bfloat16", "float16", "auto"]})
    use_cpu: bool = field(default=False, metadata={"help": "Train on the CPU even when an accelerator is present."})

    logging_steps: int = field(default=10, metadata={"help": "Log loss and learning rate every this many steps."})
    save_steps: int = field(default=500, metadata={"help": "Write a resumable checkpoint every this many steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep at most this many checkpoints."})
    resume: str | None = field(default=None, metadata={
        "help": "Resume from a checkpoint: 'latest' (or true; the newest in output_dir, none found: start "
                "fresh) or a checkpoint directory."})
    report_to: str = field(default="none", metadata={"help": "Where to send metrics: none, tensorboard, wandb..."})

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """A config from a YAML mapping of field names; `overrides` (e.g. from flags) win."""
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of TrainConfig fields")
        return cls.from_dict({**data, **overrides}, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> TrainConfig:
        """A config from field names; unknown names and missing required fields raise ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown field(s) {unknown}; see `aft train --help`")
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
                   and f.name not in data]
        if missing:
            raise ValueError(f"{source}: missing {', '.join(missing)} (set them in the YAML file or as flags)")
        if isinstance(data.get("resume"), bool):  # YAML `resume: true`
            data = {**data, "resume": "latest" if data["resume"] else None}
        config = cls(**data)
        config.bf16 = str(config.bf16).lower()  # YAML reads `bf16: true` as a bool
        if config.bf16 not in ("auto", "true", "false"):
            raise ValueError(f"{source}: bf16 must be auto, true or false, got {config.bf16!r}")
        if config.lora and config.lora_r < 1:
            raise ValueError(f"{source}: lora_r must be >= 1")
        return config

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _flag_type(annotation: object) -> Any:
    # Fields are annotated as strings (postponed evaluation); resolve the plain types we use.
    hints = {"int": int, "float": float, "str": str}
    text = str(annotation).replace("None", "").replace("|", "").strip()
    return hints.get(text, str)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (--learning-rate ...), defaulting to 'not given' so YAML values stay."""
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata["help"].replace("%", "%%")  # argparse formats help with %
        common: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        annotation = str(f.type)
        if annotation == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif annotation.startswith("list["):
            parser.add_argument(flag, nargs="+", metavar="NAME", **common)
        elif "choices" in f.metadata:
            parser.add_argument(flag, choices=f.metadata["choices"], **common)
        else:
            parser.add_argument(flag, type=_flag_type(annotation), **common)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The config a parsed command line asks for: --config FILE (if given), then the flags over it."""
    given = {k: v for k, v in vars(args).items() if k in {f.name for f in fields(TrainConfig)}}
    if getattr(args, "config", None):
        return TrainConfig.from_yaml(args.config, **given)
    return TrainConfig.from_dict(given, source="flags")

