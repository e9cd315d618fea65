"""Word problems (training/word_problems.py): the generator, its split, and the checker, with no engine."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from training.evaluate import count_any_correct, make_parser
from training.task_registry import make_task
from training.tasks import count_correct, count_votes_correct
from training.word_problems import TEMPLATES, WordProblemTask, last_number, main, reference_answer


def _numbers(question: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", question)]


def test_every_answer_is_the_arithmetic_of_its_story() -> None:
    # Each template's answer recomputed from the numbers printed in the question, independently of
    # the template's own formula: a wrong formula or a swapped blank fails here.
    task = WordProblemTask()
    seen_kinds = set()
    for problem in task.problems(400, 7):
        question = problem.conversation[0]["content"]
        numbers = _numbers(question)
        if "gets" in question and "loses" in question:
            expected, kind = numbers[0] + numbers[1] - numbers[2], "two steps"
        elif "gives" in question:
            expected, kind = numbers[0] - numbers[1], "difference"
        elif "bags with" in question:
            expected, kind = numbers[0] * numbers[1], "product"
        else:
            expected, kind = numbers[0] + numbers[1], "sum"
        seen_kinds.add(kind)
        assert problem.answer == str(expected), question
        assert expected > 0, question
        assert question.endswith("Answer with the number.")
    assert seen_kinds == {"two steps", "difference", "product", "sum"}
    assert len(TEMPLATES) == 5


def test_held_out_and_training_problems_never_meet_and_repeat_for_a_seed() -> None:
    task = WordProblemTask()
    held_out = task.problems(300, 1000)
    training = task.training_problems(2000, 0)
    questions = {p.conversation[0]["content"] for p in held_out}
    assert len(questions) == 300  # no question twice in the held-out set
    assert questions.isdisjoint(p.conversation[0]["content"] for p in training)
    assert task.problems(300, 1000) == held_out
    assert task.problems(300, 1001) != held_out


@pytest.mark.parametrize(("text", "answer"), [
    ("The answer is 12.", "12"),
    ("14 - 5 = 9", "9"),
    ("Mia has 14 stickers and gives 5, so she has 9 stickers now.", "9"),
    ("1,200", "1200"),
    ("There are 07 apples.", "7"),
    ("She counts to 30, then stops at 42,", "42"),
    ("I don't know.", None),
    ("", None),
])
def test_the_checker_reads_the_last_whole_number(text: str, answer: str | None) -> None:
    assert last_number(text) == answer
    assert WordProblemTask().extract(text) == answer


def test_scoring_a_restated_question_counts_the_answer_not_the_operands() -> None:
    task = make_task("word")
    problem = task.problems(1, 3)[0]
    numbers = _numbers(problem.conversation[0]["content"])
    restated = f"{numbers[0]} and {numbers[1]} give {problem.answer}."
    wrong = f"{problem.answer} is what I thought, but it is {int(problem.answer) + 1}."
    assert count_correct(task, [problem], [restated]) == 1
    assert count_correct(task, [problem], [wrong]) == 0
    assert count_votes_correct(task, [problem], [[wrong, restated, restated]]) == 1
    assert count_any_correct(task, [problem], [[wrong, wrong, restated]]) == 1
    assert task.extract(reference_answer(problem.answer, "2 + 3 = 5.")) == problem.answer


def test_aft_eval_takes_the_task_by_name() -> None:
    args = make_parser().parse_args(["--model", "m", "--baseline", "b", "--task", "word"])
    assert make_task(args.task).name == "word problems"


def test_the_training_queries_are_rows_aft_data_on_policy_reads(tmp_path: Path) -> None:
    out = tmp_path / "queries.jsonl"
    assert main(["-o", str(out), "--problems", "20", "--seed", "4"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 20
    held_out = {p.conversation[0]["content"] for p in WordProblemTask().problems(500, 1000)}
    for row in rows:
        working, _, said = row["reference"].rpartition(" The answer is ")
        assert said == row["answer"] + "." and working.endswith(f"= {row['answer']}.")  # worked, then answered
        numbers = _numbers(row["prompt"])
        assert all(str(n) in working for n in numbers)  # the working uses the question's own numbers
        assert not WordProblemTask.is_held_out(row["prompt"])
        assert row["prompt"] not in held_out



FIRST_HELD_OUT = ("There are 8 apples in a box and 3 apples in a bag. How many apples are there in all? "
                  "Answer with the number.")
"""Seed 1000's first held-out problem before the worked solutions were added."""


def test_the_held_out_problems_are_those_the_baseline_was_measured_on() -> None:
    """Adding the worked solutions draws nothing more from the generator: seed 1000's held-out
    problems are still those of docs/results.md's SmolLM2 table."""
    problems = WordProblemTask().problems(300, 1000)
    assert len({p.conversation[0]["content"] for p in problems}) == 300
    assert problems[0].conversation[0]["content"] == FIRST_HELD_OUT
