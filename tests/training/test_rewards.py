"""The rewards of `aft train --method grpo`: each spec checks what it says, and a bad spec is named."""

from __future__ import annotations

import pytest

from training.rewards import completion_text, make_check, reward_function


def characters_right(response: str, reference: str) -> float:
    """A user's reward (tests load it as tests.training.test_rewards:characters_right)."""
    return sum(a == b for a, b in zip(response, reference, strict=False)) / max(len(reference), 1)


def test_the_toy_tasks_check_reads_the_first_number() -> None:
    check = make_check("task:multiplication", format_reward=0.05)
    assert check("94247778 is the product", "94247778") == 1.0
    assert check("It is 94247779.", "94247778") == 0.05  # a number, the wrong one
    assert check("no idea", "94247778") == 0.0
    assert make_check("task:reversal")("7654 3", "7654") == 1.0


def test_exact_match_ignores_surrounding_whitespace_only() -> None:
    check = make_check("exact")
    assert check("  Paris\n", "Paris") == 1.0
    assert check("Paris.", "Paris") == 0.0


def test_regex_compares_the_first_group_or_the_whole_match() -> None:
    grouped = make_check(r"regex:answer: (\w+)", format_reward=0.05)
    assert grouped("I think... answer: 42 done", "42") == 1.0
    assert grouped("answer: 41", "42") == 0.05
    assert grouped("42", "42") == 0.0  # no match, not even the format
    assert make_check(r"regex:\d+")("x 12 y", " 12 ") == 1.0


def test_math_verify_accepts_equal_forms_of_an_answer() -> None:
    check = make_check("math")
    assert check("So the result is $\\boxed{\\frac{1}{2}}$.", "0.5") == 1.0
    assert check("The result is $\\boxed{3}$.", "0.5") == 0.0


def test_a_users_function_is_loaded_by_module_and_name() -> None:
    check = make_check("tests.training.test_rewards:characters_right")
    assert check("1230", "1234") == 0.75


@pytest.mark.parametrize(("spec", "message"), [
    ("nonsense", "unknown reward 'nonsense'"),
    ("task:division", "unknown task 'division'"),
    ("regex:(", "reward regex '('"),
    ("tests.training.test_rewards:missing", "cannot load missing"),
    ("no_such_module_xyz:f", "cannot load f from no_such_module_xyz"),
])
def test_a_bad_spec_is_refused_by_name(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        make_check(spec)


def test_as_a_trl_reward_it_reads_the_reference_field_of_each_row() -> None:
    reward = reward_function(make_check("exact"), "gold")
    completions = [[{"role": "assistant", "content": "a"}], [{"role": "assistant", "content": "b"}]]
    assert reward(prompts=[[], []], completions=completions, gold=["a", "a"], round=[1, 2]) == [1.0, 0.0]
    assert reward.__name__ == "correct"
    with pytest.raises(ValueError, match="'gold' field"):
        reward(prompts=[[]], completions=completions[:1], answer=["a"])
    assert completion_text("plain") == "plain"
