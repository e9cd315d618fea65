"""training.compare: the AFT-only and AFT+RL runs side by side, only where both measured the same thing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from training.compare import compare_table, main


def row(method: str, n: int, rounds: int, correct: int, total: int = 100, model: str = "aft") -> dict[str, Any]:
    return {"method": method, "model": model, "proposals": n, "rounds": rounds, "correct": correct, "total": total,
            "accuracy": correct / total, "ci_low": correct / total - 0.05, "ci_high": correct / total + 0.05,
            "tokens_per_correct": 1000 / correct if correct else None}


def results(correct: int, problems: int = 100) -> dict[str, Any]:
    return {"problems": problems, "rows": [
        row("SFT, one sample", 1, 0, 40, model="sft"),
        row("AFT, answering directly", 1, 0, 38),
        row("AFT, propose-and-aggregate", 5, 2, correct),
        row("AFT, majority vote over the same proposals", 5, 2, 3),
        row("AFT, propose-and-aggregate, each aggregation reads K=3 of the N drafts", 5, 2, correct - 10),
    ]}


def test_each_aggregation_row_is_set_beside_its_match_with_the_difference() -> None:
    table = compare_table(results(80), results(90))
    lines = table.splitlines()
    assert lines[2] == "| 5 | 2 | all | 80.0% (75.0-85.0) | 90.0% (85.0-95.0) | +10.0 | 12, 11 |"
    assert lines[3].startswith("| 5 | 2 | K=3 | 70.0% ") and "| +10.0 |" in lines[3]
    assert lines[4].startswith("| 1 | 0 | answering directly |")
    assert len(lines) == 5  # the vote and the SFT rows are not compared


def test_runs_over_different_problems_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, data in (("aft", results(80)), ("rl", results(90, problems=50))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(data))
    assert main([str(tmp_path / "aft"), str(tmp_path / "rl")]) == 2
    assert "different problems (100 and 50)" in capsys.readouterr().err


def test_seeds_are_pooled_into_each_rows_values_mean_and_spread(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    for seed, (aft, rl) in enumerate(((80, 82), (60, 70), (70, 90))):
        for name, correct in (("aft", aft), ("rl", rl)):
            (tmp_path / f"seed-{seed}" / name).mkdir(parents=True)
            (tmp_path / f"seed-{seed}" / name / "results.json").write_text(json.dumps(results(correct)))
    (tmp_path / "seed-3" / "aft").mkdir(parents=True)  # a seed still running: left out
    assert main(["--seeds", str(tmp_path), "--out", str(tmp_path / "seeds.md")]) == 0
    lines = (tmp_path / "seeds.md").read_text().splitlines()
    assert lines[2] == "| 5 | 2 | all | 80.0 / 60.0 / 70.0 | 70.0% | 20.0 | 82.0 / 70.0 / 90.0 | 80.7% | 20.0 |"
    assert lines[3].startswith("| 5 | 2 | K=3 | 70.0 / 50.0 / 60.0 | 60.0% | 20.0 |")
    assert lines[4].startswith("| 1 | 0 | answering directly | 38.0 / 38.0 / 38.0 | 38.0% | 0.0 |")
    assert "seed-0, seed-1, seed-2" in capsys.readouterr().out
    assert main(["--seeds", str(tmp_path / "seed-3")]) == 2  # nothing to pool is an error, not an empty table
    with pytest.raises(SystemExit):
        main([str(tmp_path)])  # one run alone is neither form


def test_seeds_compare_another_rl_stage_by_its_directory_name(tmp_path: Path) -> None:
    for seed, (aft, rl, longer) in enumerate(((80, 82, 90), (60, 70, 88))):
        for name, correct in (("aft", aft), ("rl", rl), ("rl-long", longer)):
            (tmp_path / f"seed-{seed}" / name).mkdir(parents=True)
            (tmp_path / f"seed-{seed}" / name / "results.json").write_text(json.dumps(results(correct)))
    (tmp_path / "seed-2" / "aft").mkdir(parents=True)
    (tmp_path / "seed-2" / "rl").mkdir()  # this seed has no rl-long: left out
    assert main(["--seeds", str(tmp_path), "--rl-name", "rl-long", "--out", str(tmp_path / "seeds.md")]) == 0
    lines = (tmp_path / "seeds.md").read_text().splitlines()
    assert lines[2] == "| 5 | 2 | all | 80.0 / 60.0 | 70.0% | 20.0 | 90.0 / 88.0 | 89.0% | 2.0 |"
