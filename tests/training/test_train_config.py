"""TrainConfig: YAML files, flags over them, and the refusals that name what is wrong."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from training.config import TrainConfig, make_parser, parse_config
from training.train import bf16_enabled, lora_config, sft_config

CONFIGS = Path(__file__).parents[2] / "training" / "configs"


@pytest.mark.parametrize("name", ["tiny-cpu.yaml", "llama31-8b-lora.yaml", "llama31-8b-full.yaml"])
def test_shipped_configs_load(name: str) -> None:
    config = TrainConfig.from_yaml(CONFIGS / name)
    assert config.model and config.data and config.bf16 in ("auto", "true", "false")
    if config.chat_template:
        assert (CONFIGS.parents[1] / config.chat_template).is_file()


def test_flags_override_the_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model: m\ndata: d.jsonl\nlearning_rate: 1.0e-4\nlora: true\nbf16: false\nresume: true\n"
                    "lora_target_modules: [q_proj, v_proj]\n")
    config = parse_config(["--config", str(path), "--learning-rate", "3e-5", "--no-lora", "--max-length", "512"])
    assert parse_config([f"--config={path}", "--learning-rate", "3e-5", "--no-lora", "--max-length", "512"]) == config
    assert (config.learning_rate, config.lora, config.max_length) == (3e-5, False, 512)
    assert config.bf16 == "false" and config.resume == "latest"  # YAML booleans normalized
    assert config.lora_target_modules == ["q_proj", "v_proj"] and config.model == "m"
    assert parse_config(["--model", "m", "--data", "d", "--lora-target-modules", "q_proj", "k_proj"]
                        ).lora_target_modules == ["q_proj", "k_proj"]


def test_refusals_exit_2_naming_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def refused(argv: list[str]) -> str:
        with pytest.raises(SystemExit) as exit_:
            parse_config(argv)
        assert exit_.value.code == 2
        return capsys.readouterr().err.splitlines()[-1]

    path = tmp_path / "run.yaml"
    path.write_text("model: m\ndata: d\nlearning_rat: 1\n")
    assert refused(["--config", str(path)]) == (
        "aft train: error: unknown field(s) in the config file: learning_rat; see --help")
    assert refused(["--model", "m"]) == "aft train: error: the following arguments are required: --data"
    assert refused(["--model", "m", "--data", "d", "--bf16", "maybe"]).startswith(
        "aft train: error: argument --bf16: invalid choice: 'maybe'")
    path.write_text("model: m\ndata: d\nbf16: maybe\n")
    assert refused(["--config", str(path)]) == "aft train: error: bf16 must be auto, true or false, got 'maybe'"
    assert "missing.yaml" in refused(["--config", str(tmp_path / "missing.yaml")])
    assert refused(["--model", "m", "--data", "d", "--learning-rat", "1"]) == (
        "aft train: error: unrecognized arguments: --learning-rat 1")
    with pytest.raises(ValueError, match="bf16 must be auto, true or false"):
        TrainConfig(model="m", data="d", bf16="maybe")


def test_every_field_has_help_and_a_flag() -> None:
    help_text = make_parser().format_help()
    for f in fields(TrainConfig):
        assert f.metadata["help"]
        assert "--" + f.name.replace("_", "-") in help_text


def test_trl_configuration() -> None:
    config = TrainConfig(model="m", data="d", output_dir="out", lora=True, lora_r=4, bf16="auto", use_cpu=True,
                         save_total_limit=None)
    sft = sft_config(config)
    assert sft.completion_only_loss is True and sft.max_length == 4096 and sft.use_cpu
    import torch

    has_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    assert sft.bf16 is has_bf16 and bf16_enabled("auto") is has_bf16
    assert bf16_enabled("true") and not bf16_enabled("false")
    assert sft.model_init_kwargs == {"dtype": "float32"}
    lora = lora_config(config)
    assert lora is not None and lora.r == 4 and lora.target_modules == "all-linear"
    assert lora_config(TrainConfig(model="m", data="d")) is None
