"""`aft train --method grpo` on the tiny model: a few GRPO steps move the weights (full and LoRA),
the run records its RL settings, and bad rows, rewards or flags are refused before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.training.aft_fixtures import tiny_config
from training.config import TRAIN_RECORD, parse_run
from training.grpo import grpo_config, train_grpo
from training.rl_config import RLConfig
from training.rl_data import rl_row
from training.rows import write_jsonl
from training.train import main


def longer_is_better(response: str, reference: str) -> float:
    """A reward that separates a random model's completions (tests load it by module:function)."""
    return min(len(response), 40) / 40


USER_REWARD = "tests.training.test_grpo:longer_is_better"


@pytest.fixture
def rl_rows_file(tmp_path: Path) -> Path:
    rows = [rl_row([{"role": "user", "content": f"What is {i} + {i}?"}], [str(2 * i), str(2 * i + 1)], str(2 * i),
                   round_=1, of=2, hard=False) for i in range(8)]
    path = tmp_path / "rl.jsonl"
    write_jsonl(rows, path)
    return path


def rl_settings(**overrides: object) -> RLConfig:
    return RLConfig(**({"reward": USER_REWARD, "num_generations": 4, "max_completion_length": 12} | overrides))


def test_a_few_grpo_steps_change_the_weights_and_record_the_run(tiny_model: Path, rl_rows_file: Path,
                                                                 tmp_path: Path) -> None:
    config = tiny_config(tiny_model, rl_rows_file, tmp_path / "run", method="grpo", max_steps=3, batch_size=8,
                         learning_rate=1e-2)
    final = train_grpo(config, rl_settings())
    before, after = load_file(tiny_model / "model.safetensors"), load_file(final / "model.safetensors")
    changed = [name for name in before if not (before[name] == after[name]).all()]
    assert any("layers.0." in name for name in changed), changed
    record = json.loads((final / TRAIN_RECORD).read_text())
    assert record["method"] == "grpo" and record["rl"]["reward"] == USER_REWARD
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    rewards = [entry["reward"] for entry in state["log_history"] if "reward" in entry]
    assert len(rewards) == 3 and all(0 <= r <= 1 for r in rewards)


def test_lora_trains_adapters_only(tiny_model: Path, rl_rows_file: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_model, rl_rows_file, tmp_path / "run", method="grpo", max_steps=2, batch_size=8,
                         learning_rate=1e-2, lora=True, lora_r=4)
    final = train_grpo(config, rl_settings())
    adapter = load_file(final / "adapter_model.safetensors")
    lora_b = [tensor for name, tensor in adapter.items() if "lora_B" in name]
    assert lora_b and any(t.abs().sum() > 0 for t in lora_b)  # B starts at zero: only training moves it
    assert not (final / "model.safetensors").exists()


def test_a_step_must_hold_whole_groups(tiny_model: Path, rl_rows_file: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_model, rl_rows_file, tmp_path / "run", method="grpo", batch_size=6)
    with pytest.raises(ValueError, match=r"\(6\) must be a multiple of num_generations \(4\)"):
        grpo_config(config, rl_settings())


def test_flags_and_yaml_set_the_rl_fields_and_sft_refuses_them(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "rl.yaml"
    path.write_text("model: m\ndata: d\nmethod: grpo\nreward: task:reversal\nnum_generations: 4\n")
    config, rl = parse_run(["--config", str(path), "--beta", "0.01", "--rl-temperature", "0.7"])
    assert (config.method, rl.reward, rl.num_generations, rl.beta, rl.rl_temperature) == (
        "grpo", "task:reversal", 4, 0.01, 0.7)
    with pytest.raises(SystemExit):
        parse_run(["--model", "m", "--data", "d", "--reward", "math"])
    assert "reward: only for --method grpo" in capsys.readouterr().err


@pytest.mark.parametrize(("row", "flags", "message"), [
    ({"prompt": "text", "answer": "1"}, [], "line 1: 'prompt' must be"),
    ({"prompt": [{"role": "user", "content": "q"}]}, [], "line 1: no 'answer' field"),
    ({"prompt": [{"role": "user", "content": "q"}], "answer": "1"}, ["--reward", "nonsense"], "unknown reward"),
])
def test_main_refuses_bad_rows_and_rewards_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       row: dict[str, object], flags: list[str], message: str) -> None:
    data = tmp_path / "rl.jsonl"
    write_jsonl([row], data)
    code = main(["--method", "grpo", "--model", str(tmp_path / "no-model"), "--data", str(data), *flags])
    assert code == 2
    assert message in capsys.readouterr().err
