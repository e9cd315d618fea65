"""TrainConfig: everything `aft train` can be told, from a YAML file and flags (flags win).

TRL style: one dataclass, every field with help text; TRL's own parser (TrlParser, an
HfArgumentParser) makes the flags of `aft train` from it and reads `--config FILE.yaml`, so
`aft train --help` and a YAML file name the same things. Importing this module loads no torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from transformers.hf_argparser import DataClassType
from trl.scripts.utils import TrlParser

from training.rl_config import RLConfig

TRAIN_RECORD = "aft_train.json"
"""A run's TrainConfig, saved beside its final model (`aft export` reads the base model and data from it)."""


@dataclass
class TrainConfig:
    """How to fine-tune a model on AFT rows (see training/rows.py) with TRL's SFTTrainer, or by reward
    (`method: grpo`, GRPOTrainer on `aft data rl` rows; RLConfig holds its own fields)."""

    model: str = field(metadata={"help": "Base model to fine-tune: checkpoint directory or hub id."})
    data: str = field(metadata={"help": "Training rows: a JSONL file written by `aft data` (validated first)."})
    output_dir: str = field(default="runs/aft", metadata={
        "help": "Checkpoints go to OUTPUT_DIR/checkpoint-*, the final model to OUTPUT_DIR/final."})
    export_dir: str | None = field(default=None, metadata={
        "help": "After training, export a checkpoint `aft serve` loads as it is (LoRA merged, aft.json) here."})
    method: str = field(default="sft", metadata={
        "help": "sft: imitation of the rows' targets (SFTTrainer); grpo: reinforcement by a verifiable reward "
                "(GRPOTrainer) on rows of `aft data rl`, usually from an AFT checkpoint.",
        "choices": ["sft", "grpo"]})
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
        "help": "Recompute activations in the backward pass: far less memory for about a third more compute."})
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

    def __post_init__(self) -> None:
        # YAML reads `bf16: true` as a bool and `resume: true` as one too.
        self.bf16 = str(self.bf16).lower()
        if self.bf16 not in ("auto", "true", "false"):
            raise ValueError(f"bf16 must be auto, true or false, got {self.bf16!r}")
        if isinstance(self.resume, bool) or self.resume == "true":
            self.resume = "latest" if self.resume else None
        if self.method not in ("sft", "grpo"):
            raise ValueError(f"method must be sft or grpo, got {self.method!r}")
        if self.lora and self.lora_r < 1:
            raise ValueError("lora_r must be >= 1")

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """The config a YAML file of field names asks for (what `aft train --config FILE` reads)."""
        return parse_config(["--config", str(path)])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_parser(prog: str = "aft train") -> TrlParser:
    """TRL's parser over TrainConfig: one flag per field (--learning-rate or --learning_rate), and
    --config FILE.yaml whose values replace the defaults; flags win over the file."""
    parser = TrlParser([DataClassType(TrainConfig), DataClassType(RLConfig)], prog=prog, allow_abbrev=False,
                       description=(
        "Fine-tune a model on AFT rows (aft data) with TRL's SFTTrainer, or by reward with GRPOTrainer "
        "(--method grpo, rows of `aft data rl`; the RLConfig fields). Every field is a flag and a key of the "
        "--config YAML file; flags win."))
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML mapping of the fields below.")
    hints = get_type_hints(TrainConfig)
    for f in fields(TrainConfig):  # HfArgumentParser gives --no-X only to fields that default to true
        if hints[f.name] is bool and f.default is False:
            flag = f.name.replace("_", "-")
            parser.add_argument(f"--no-{flag}", f"--no_{f.name}", action="store_false", dest=f.name,
                                default=argparse.SUPPRESS, help=f"Not --{flag}.")
    return parser


def parse_config(argv: Sequence[str] | None = None, prog: str = "aft train") -> TrainConfig:
    """The config a command line asks for; a bad flag, file or value exits 2 with one line saying which."""
    return parse_run(argv, prog)[0]


def parse_run(argv: Sequence[str] | None = None, prog: str = "aft train") -> tuple[TrainConfig, RLConfig]:
    """The TrainConfig and RLConfig a command line asks for; RL fields under method sft are refused."""
    parser = make_parser(prog)
    # TrlParser reads the file only from `--config FILE`; `--config=FILE` would pass unread.
    args = [part for arg in (sys.argv[1:] if argv is None else argv)
            for part in (arg.split("=", 1) if arg.startswith("--config=") else [arg])]
    try:
        config, rl, *_, from_file, from_flags = parser.parse_args_and_config(
            args, return_remaining_strings=True, separate_remaining_strings=True)
    except (OSError, ValueError) as exc:  # the YAML file (missing, not a mapping), a refused value
        parser.error(str(exc))
    if from_file:
        unknown = ", ".join(key.removeprefix("--") for key in from_file[::2])  # ["--key", "value", ...]
        parser.error(f"unknown field(s) in the config file: {unknown}; see --help")
    if from_flags:
        parser.error(f"unrecognized arguments: {' '.join(from_flags)}")
    assert isinstance(config, TrainConfig) and isinstance(rl, RLConfig)
    if config.method == "sft" and rl.changed():
        parser.error(f"{', '.join(rl.changed())}: only for --method grpo")
    return config, rl
