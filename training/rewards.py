"""Verifiable rewards for `aft train --method grpo`: is an aggregation right?

A reward is named by a spec string (`RLConfig.reward`):

- `task:multiplication`, `task:reversal`: the toy tasks' own check (training/tasks.py): the answer
  a response gives (its first number) equals the reference;
- `exact`: the response, stripped, equals the reference, stripped;
- `regex:PATTERN`: the first match of PATTERN in the response (its first group, if it has one)
  equals the reference, stripped;
- `math`: `math-verify` finds the response's answer mathematically equal to the reference
  (`\\boxed{1/2}` and `0.5`);
- `MODULE:FUNCTION`: a function of the user's, `f(response: str, reference: str) -> float | bool`.

The reference is a field of the row (`RLConfig.reward_field`, default `answer`). A wrong answer
that has the expected form (a number, a regex match, a parsable expression) earns
`format_reward` (SSA gives 0.05: a small push towards answering at all); anything else 0.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence
from typing import Any

from training.task_registry import make_task

Check = Callable[[str, str], float]
"""(response, reference) -> reward."""

BUILTIN_REWARDS = ("task:multiplication", "task:reversal", "exact", "regex:PATTERN", "math")


def _graded(answer: str | None, reference: str, format_reward: float) -> float:
    if answer is None:
        return 0.0
    return 1.0 if answer == reference.strip() else format_reward


def _task_check(name: str, format_reward: float) -> Check:
    task = make_task(name)
    return lambda response, reference: _graded(task.extract(response), reference, format_reward)


def _regex_check(pattern: str, format_reward: float) -> Check:
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"reward regex {pattern!r}: {exc}") from None

    def check(response: str, reference: str) -> float:
        match = compiled.search(response)
        answer = None if match is None else (match.group(1) if compiled.groups else match.group(0))
        return _graded(answer.strip() if answer is not None else None, reference, format_reward)
    return check


def _math_check(format_reward: float) -> Check:
    from math_verify import parse, verify  # the train extra; only where this reward is asked for

    def check(response: str, reference: str) -> float:
        gold, answer = parse(reference), parse(response)
        if not answer:
            return 0.0
        return 1.0 if verify(gold, answer) else format_reward
    return check


def _user_check(spec: str) -> Check:
    module_name, _, function_name = spec.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"reward {spec!r}: cannot load {function_name} from {module_name}: {exc}") from None
    if not callable(function):
        raise ValueError(f"reward {spec!r}: {function_name} is not callable")
    return lambda response, reference: float(function(response, reference))


def make_check(spec: str, *, format_reward: float = 0.0) -> Check:
    """The check a reward spec names; ValueError says what is wrong with the spec."""
    if spec.startswith("task:"):
        name = spec.removeprefix("task:")
        try:
            return _task_check(name, format_reward)
        except ValueError as exc:
            raise ValueError(f"reward {spec!r}: {exc}") from None
    if spec.startswith("regex:"):
        return _regex_check(spec.removeprefix("regex:"), format_reward)
    if spec == "exact":
        return lambda response, reference: float(response.strip() == reference.strip())
    if spec == "math":
        return _math_check(format_reward)
    if ":" in spec:
        return _user_check(spec)
    raise ValueError(f"unknown reward {spec!r}; known: {', '.join(BUILTIN_REWARDS)} or MODULE:FUNCTION")


def completion_text(completion: str | Sequence[dict[str, Any]]) -> str:
    """A completion as TRL hands it to a reward: a string, or (conversational rows) its messages."""
    if isinstance(completion, str):
        return completion
    return "".join(str(message.get("content") or "") for message in completion)


def reward_function(check: Check, field: str = "answer") -> Callable[..., list[float | None]]:
    """The check as a TRL reward function: `(prompts, completions, **columns) -> rewards`, the
    reference read from the row's `field` column."""

    def correct(prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        if field not in columns:
            raise ValueError(f"the reward reads the rows' {field!r} field, which they do not have")
        return [check(completion_text(c), str(ref)) for c, ref in zip(completions, columns[field], strict=True)]

    correct.__name__ = "correct"  # TRL logs each reward as rewards/<name>
    return correct
