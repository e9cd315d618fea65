"""Training on the tiny model: the loss falls, the weights move, LoRA trains adapters, runs resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from tests.training.aft_fixtures import tiny_config
from training.config import TRAIN_RECORD
from training.train import resume_checkpoint, train


def losses(output_dir: Path) -> list[float]:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def weights(directory: Path) -> dict[str, Any]:
    return load_file(directory / "model.safetensors")


def test_full_fine_tuning_lowers_the_loss_and_changes_every_layer(tiny_model: Path, rows_file: Path,
                                                                   tmp_path: Path) -> None:
    config = tiny_config(tiny_model, rows_file, tmp_path / "run")
    final = train(config)
    curve = losses(tmp_path / "run")
    assert len(curve) == 10
    assert sum(curve[-3:]) / 3 < 0.7 * sum(curve[:3]) / 3, curve
    before, after = weights(tiny_model), weights(final)
    assert before.keys() == after.keys()
    changed = {name for name in before if not (before[name] == after[name]).all()}
    assert {n for n in before if "layers.0." in n and n.endswith("weight") and "norm" not in n} <= changed
    assert (final / "tokenizer.json").is_file() and (final / "chat_template.jinja").is_file()
    assert json.loads((final / TRAIN_RECORD).read_text())["model"] == str(tiny_model)


def test_lora_trains_adapters_with_gradient_checkpointing(tiny_model: Path, rows_file: Path,
                                                          tmp_path: Path) -> None:
    config = tiny_config(tiny_model, rows_file, tmp_path / "run", lora=True, lora_r=8, lora_alpha=16,
                         learning_rate=1e-2, gradient_checkpointing=True)
    final = train(config)
    curve = losses(tmp_path / "run")
    assert sum(curve[-3:]) / 3 < 0.85 * sum(curve[:3]) / 3, curve
    adapter = json.loads((final / "adapter_config.json").read_text())
    assert adapter["r"] == 8 and not (final / "model.safetensors").exists()  # the base stays untouched
    lora_b = [t for name, t in load_file(final / "adapter_model.safetensors").items() if "lora_B" in name]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)  # B starts at zero: it moved


def test_resume_continues_from_the_latest_checkpoint(tiny_model: Path, rows_file: Path, tmp_path: Path) -> None:
    output = tmp_path / "run"
    assert resume_checkpoint(tiny_config(tiny_model, rows_file, output, resume="latest")) is None  # nothing yet
    train(tiny_config(tiny_model, rows_file, output, max_steps=4, save_steps=2))
    assert sorted(p.name for p in output.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    resumed = tiny_config(tiny_model, rows_file, output, max_steps=4, seed=7, resume="latest")
    assert resume_checkpoint(resumed) == str(output / "checkpoint-4")
    final = train(resumed)
    # Resumed at step 4 of 4, the run has nothing left to do: the model is checkpoint 4's exactly.
    # (A fresh start with another seed would have seen the rows in another order.)
    saved, restored = weights(output / "checkpoint-4"), weights(final)
    assert all((saved[name] == restored[name]).all() for name in saved)
    assert len(losses(output)) == 4


def test_rows_longer_than_max_length_are_dropped_and_logged(tiny_model: Path, rows_file: Path, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    from training.train import build_trainer

    # The aggregation prompts (template and drafts) alone pass 60 tokens; the plain ones fit.
    trainer = build_trainer(tiny_config(tiny_model, rows_file, tmp_path / "run", max_length=60))
    assert len(trainer.train_dataset) == 4
    assert "12 of 16 examples had no completion token within max_length=60" in caplog.text


def test_a_callback_that_reaches_its_target_stops_the_run_with_the_model_saved(tiny_model: Path, rows_file: Path,
                                                                                tmp_path: Path) -> None:
    from training.stop import stop_at_accuracy

    accuracies = iter([0.1, 0.5, 0.8, 0.9])
    measured: list[Any] = []

    def measure(model: Any) -> float:
        measured.append(model)
        return next(accuracies)

    stop = stop_at_accuracy(measure, target=0.75, every=2)
    final = train(tiny_config(tiny_model, rows_file, tmp_path / "run"), callbacks=(stop,))  # max_steps=10
    assert stop.curve == [(2, 0.1), (4, 0.5), (6, 0.8)]  # measured every 2 steps, stopped at the first >= 0.75
    assert all(hasattr(m, "generate") for m in measured)  # the model being trained, in its current state
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    assert (final / "model.safetensors").is_file()
