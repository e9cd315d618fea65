"""The toy recipe's RL stage is reached from the command line: after AFT (--rl-steps) or alone (--rl-from)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from training.toy_config import RECIPES, recipe


def test_rl_steps_reach_the_recipe_and_default_to_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from training import toy

    assert RECIPES["reversal"].rl_steps == 0 and RECIPES["multiplication"].rl_steps == 0  # opt in
    seen: list[Any] = []
    monkeypatch.setattr(toy, "run_recipe", lambda out, config, work_dir: seen.append(config))
    assert toy.main(["--task", "reversal", "--out", str(tmp_path / "m"), "--no-eval", "--rl-steps", "9",
                     "--rl-learning-rate", "1e-4", "--rl-queries", "50", "--rl-proposals", "1,3"]) == 0
    (config,) = seen
    assert (config.rl_steps, config.rl_learning_rate, config.rl_queries, config.task) == (9, 1e-4, 50, "reversal")
    assert config.rl_proposals == (1, 3)
    with pytest.raises(SystemExit):
        toy.main(["--out", str(tmp_path / "m"), "--rl-proposals", "3,none"])


def test_rl_from_runs_the_stage_alone_and_evaluates_against_its_start(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from training import toy

    stages: list[Any] = []
    evaluations: list[Any] = []
    monkeypatch.setattr(toy, "run_recipe", lambda *args, **kwargs: pytest.fail("the recipe must not run"))
    monkeypatch.setattr(toy, "run_rl_stage", lambda start, out, config, work_dir, engine: stages.append(
        (start, out, config, work_dir)))
    monkeypatch.setattr(toy, "evaluate_toy", lambda out, baseline, results, problems, config: evaluations.append(
        (out, baseline)))
    assert toy.main(["--rl-from", "checkpoints/toy", "--out", str(tmp_path / "rl"), "--problems", "10"]) == 0
    ((start, out, config, work),) = stages
    assert (start, out, work) == ("checkpoints/toy", tmp_path / "rl", tmp_path / "rl-work")
    assert config.rl_steps == toy.RL_FROM_STEPS and config == recipe("multiplication", rl_steps=toy.RL_FROM_STEPS)
    assert evaluations == [(tmp_path / "rl", Path("checkpoints/toy"))]


def test_the_rl_export_keeps_the_aft_recommendations_but_early_exit_and_records_the_stage() -> None:
    from training.toy_rl import rl_manifest

    aft = {"recommended": {"proposals": 3, "rounds": 2, "temperature": 0.7, "early_exit": 1.0},
           "data": {"builder": "training.toy", "aft_examples": 12}}
    data, recommended = rl_manifest(aft, {"method": "grpo", "steps": 400})
    assert recommended == {"proposals": 3, "rounds": 2, "temperature": 0.7}
    assert data == {"builder": "training.toy", "aft_examples": 12, "rl_stage": {"method": "grpo", "steps": 400}}
    assert aft["recommended"]["early_exit"] == 1.0  # the AFT checkpoint's manifest is not changed
    assert rl_manifest({}, {})[1] == {}
