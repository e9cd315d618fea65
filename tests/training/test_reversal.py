"""The second toy task: sequences reversed, drafts combined digit by digit, and its recipe's settings."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from training.rows import is_aft_row
from training.task_registry import make_task
from training.tasks import ReversalTask
from training.toy import aggregation_rows, consensus
from training.toy_config import RECIPES, RecipeConfig, recipe


def test_problems_are_reproducible_reversals_of_the_question() -> None:
    task = ReversalTask(12)
    problems = task.problems(100, seed=3)
    assert problems == task.problems(100, seed=3) and problems != task.problems(100, seed=4)
    for problem in problems:
        digits = problem.conversation[0]["content"].removeprefix("Reverse ")
        assert len(digits) == 12 and digits.isdigit() and problem.answer == digits[::-1]


def test_training_never_sees_a_held_out_sequence() -> None:
    task = ReversalTask(3)  # 1,000 sequences: a leak would show
    held_out = {p.answer for p in task.problems(40, seed=0)}
    training = {p.answer for p in task.training_problems(5_000, seed=0)}
    assert held_out and training and not held_out & training


def test_slips_replace_digits_by_others_at_the_given_rate() -> None:
    rng = random.Random(0)
    assert ReversalTask.slipped("0123456789", 0.0, rng) == "0123456789"
    assert all(s != d for s, d in zip(ReversalTask.slipped("0123456789", 1.0, rng), "0123456789", strict=True))
    drafts = [ReversalTask.slipped("0123456789", 0.2, rng) for _ in range(2000)]
    assert all(len(d) == 10 for d in drafts)
    rate = sum(s != d for draft in drafts for s, d in zip(draft, "0123456789", strict=True)) / 20_000
    assert 0.18 < rate < 0.22


def test_the_answer_is_the_first_run_of_digits() -> None:
    task = make_task("reversal", digits=4)
    assert isinstance(task, ReversalTask) and task.length == 4
    assert task.extract(" 4321\n") == "4321" and task.extract("none") is None
    with pytest.raises(ValueError, match="multiplication, reversal"):
        make_task("sorting")


def test_consensus_writes_what_most_drafts_say_at_each_digit() -> None:
    # No draft is right, but every digit is right in two of the three.
    assert consensus(["1239", "1284", "7234"]) == "1234"
    assert consensus(["12", "34"]) == "12"  # a tie goes to the first draft
    assert consensus(["5"]) == "5"
    assert consensus(["123", "1", "124"]) == "123"  # a short draft says nothing past its end
    assert consensus(["", " 4321\n", "4301"]) == "4321"  # as long as most drafts, whitespace ignored
    assert consensus(["", ""]) == ""


def test_consensus_rows_teach_what_the_drafts_read_agree_on() -> None:
    problems = ReversalTask(6).training_problems(200, seed=1)
    rng = random.Random(2)
    drafts = [[ReversalTask.slipped(p.answer, 0.3, rng) for _ in range(8)] for p in problems]
    rows = aggregation_rows(problems, drafts, max_proposals=8, seed=0, targets="consensus")
    assert all(is_aft_row(row) for row in rows) and len(rows) == len(problems)
    for row in rows:
        listed = row["prompt"][0]["content"].split("Responses from models:\n", 1)[1]
        read = [line.split(". ", 1)[1] for line in listed.splitlines()]
        assert 1 <= len(read) <= 8 and row["completion"][0]["content"] == consensus(read)
    reference = aggregation_rows(problems, drafts, max_proposals=8, seed=0)
    assert [r["completion"][0]["content"] for r in reference] == [p.answer for p in problems]
    # With three or more slipped drafts the consensus is mostly right, with one it is the draft itself.
    right = sum(r["completion"][0]["content"] == p.answer for r, p in zip(rows, problems, strict=True))
    assert 0.3 * len(rows) < right < len(rows)


def test_drafts_that_say_nothing_make_no_consensus_row() -> None:
    problems = ReversalTask(4).training_problems(2, seed=1)
    rows = aggregation_rows(problems, [[""], ["1234"]], max_proposals=1, seed=0, targets="consensus")
    assert [row["completion"][0]["content"] for row in rows] == ["1234"]


def test_each_task_has_its_recipe_and_the_command_line_picks_it(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from training import toy

    assert RECIPES["multiplication"] == RecipeConfig(early_exit=1.0)
    reversal = recipe("reversal", seed=2, sft_steps=None)
    assert (reversal.task, reversal.seed, reversal.aft_targets, reversal.proposals) == ("reversal", 2, "reference", 5)
    assert reversal.sft_examples == reversal.sft_steps * reversal.sft_batch_size
    with pytest.raises(ValueError, match="aft_targets"):
        RecipeConfig(aft_targets="vote")
    seen: list[Any] = []
    monkeypatch.setattr(toy, "run_recipe", lambda out, config, work_dir: seen.append(config))
    assert toy.main(["--task", "reversal", "--out", str(tmp_path / "m"), "--no-eval", "--aft-steps", "7"]) == 0
    (config,) = seen
    assert (config.task, config.aft_steps, config.sft_slip_rate) == ("reversal", 7, RECIPES["reversal"].sft_slip_rate)


def test_aft_eval_reads_the_sequences_the_recipe_trains_on() -> None:
    assert make_task("reversal") == ReversalTask(RECIPES["reversal"].digits)
    assert make_task("multiplication").name == "toy multiplication"


@pytest.mark.integration
def test_the_reversal_recipe_runs_with_its_typo_phase(tmp_path: Path) -> None:
    """The reversal recipe on the real code paths, a handful of steps a stage: SFT, then the phase on
    targets with typos (a second TRL run), drafts on vLLM, AFT, export."""
    import importlib.util
    import json
    import os

    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed")
    from scripts.launch import CPU_ENGINE_ENV
    from serving.manifest import read_manifest
    from training.rows import read_jsonl
    from training.toy import run_recipe
    from training.toy_model import ModelShape

    os.environ.update(CPU_ENGINE_ENV)
    config = recipe("reversal", digits=6, shape=ModelShape(hidden_size=64, layers=1, heads=1), sft_steps=3,
                    sft_batch_size=8, sft_noise_steps=2, aft_queries=12, aft_on_policy_queries=4, aft_steps=2,
                    aft_batch_size=4)
    out = run_recipe(tmp_path / "toy", config)
    manifest = read_manifest(out)
    assert manifest is not None and manifest.recommended.proposals == 5 and manifest.data["task"] == "toy reversal"
    work = tmp_path / "toy-work"
    assert (work / "sft-clean" / "final" / "config.json").is_file() and (work / "sft" / "final").is_dir()
    noisy = read_jsonl(work / "sft" / "rows.jsonl")
    assert len(noisy) == 2 * 8 and any(
        row["completion"][0]["content"] != row["prompt"][-1]["content"].removeprefix("Reverse ")[::-1]
        for row in noisy)  # typos at a rate of 0.2 over 16 answers of 6 digits
    assert json.loads((work / "timings.json").read_text())["total"] > 0
