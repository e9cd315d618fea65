"""Tasks with checkable answers: problems, the answers responses give, and how many are right.

The leaf of training/: evaluation (training/evaluate.py), the stopping rule (training/stop.py)
and the recipes (training/toy.py) all score answers with what is here, and it imports no other
training module. A task is anything with `name`, `problems(n, seed)` and `extract(text)`; a
response is right when the answer it gives equals the problem's reference answer.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from serving.format import Message


@dataclass(frozen=True)
class Problem:
    """One question and the answer a correct response gives."""

    conversation: list[Message]
    answer: str


class Task(Protocol):
    """A task with checkable answers."""

    @property
    def name(self) -> str:
        """What the results call it."""
        ...

    def problems(self, n: int, seed: int) -> list[Problem]:
        """`n` held-out problems, the same ones for the same seed."""
        ...

    def extract(self, text: str) -> str | None:
        """The answer a response gives (what is checked and voted on); None when it gives none."""
        ...


class ToyTask(Task, Protocol):
    """A task the toy recipe trains on: held-out and training problems, and slipped answers."""

    def training_problems(self, n: int, seed: int) -> list[Problem]:
        """`n` training problems (never held out), the same ones for the same seed."""
        ...

    def slipped(self, answer: str, rate: float, rng: random.Random) -> str:
        """`answer` with each digit wrong with chance `rate`, as a draft that slips."""
        ...



def count_correct(task: Task, problems: Sequence[Problem], texts: Sequence[str | None]) -> int:
    """How many of `texts` give their problem's answer (None, no response, never does)."""
    return sum(t is not None and task.extract(t) == p.answer for p, t in zip(problems, texts, strict=True))


V = TypeVar("V", bound=Hashable)


def majority_vote(answers: Sequence[V | None]) -> V | None:
    """The most frequent answer (None, no answer, never wins); ties go to the one seen first."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


def count_votes_correct(task: Task, problems: Sequence[Problem], samples: Sequence[Sequence[str]]) -> int:
    """How many problems the majority vote over their `samples` answers right."""
    votes = [majority_vote([task.extract(s) for s in group]) for group in samples]
    return sum(v is not None and v == p.answer for p, v in zip(problems, votes, strict=True))


_NUMBER = re.compile(r"\d+")


def first_number(text: str) -> str | None:
    """The first run of digits in `text`, or None: what both toy tasks read as a response's answer."""
    match = _NUMBER.search(text)
    return match.group(0) if match else None


class HeldOutSplit:
    """Held-out and training problems drawn by one generator (`_problems`), never the same ones."""

    def _problems(self, n: int, seed: int, *, held_out: bool) -> list[Problem]:
        raise NotImplementedError

    def problems(self, n: int, seed: int) -> list[Problem]:
        """`n` held-out problems (never trained on), the same ones for the same seed."""
        return self._problems(n, seed, held_out=True)

    def training_problems(self, n: int, seed: int) -> list[Problem]:
        """`n` training problems (never held out), the same ones for the same seed."""
        return self._problems(n, seed, held_out=False)


@dataclass(frozen=True)
class MultiplicationTask(HeldOutSplit):
    """A `digits`-digit number times one digit (2..9), the product `digits` digits long too.

    Keeping the product as long as the number (no carry out of the top digit) puts every
    answer digit at a fixed distance from the digits it depends on, which rotary positions
    make easy to find. Each answer digit is (k * a_i + carry) mod 10, strongly tied to the
    one digit a_i, so a tiny model learns it smoothly; two-number addition, whose answer
    digits are tied to no single operand digit, sat on a loss plateau for hundreds of steps.
    """

    digits: int = 8
    name: str = "toy multiplication"

    def operands(self, rng: random.Random, *, held_out: bool) -> tuple[int, int]:
        low, high = 10 ** (self.digits - 1), 10 ** self.digits
        while True:
            a, k = rng.randrange(low, high), rng.randrange(2, 10)
            if a * k < high and self.is_held_out(a, k) == held_out:
                return a, k

    @staticmethod
    def is_held_out(a: int, k: int) -> bool:
        """One problem in 16, by a fixed hash: evaluation draws only these, training never."""
        return (a * 2654435761 + k * 40503) % 16 == 0

    @staticmethod
    def question(a: int, k: int) -> str:
        return f"What is {a} × {k}?"

    def _problems(self, n: int, seed: int, *, held_out: bool) -> list[Problem]:
        rng = random.Random(seed)
        problems = []
        for _ in range(n):
            a, k = self.operands(rng, held_out=held_out)
            problems.append(Problem([{"role": "user", "content": self.question(a, k)}], str(a * k)))
        return problems

    @staticmethod
    def slipped(answer: str, rate: float, rng: random.Random) -> str:
        """`answer` with carry slips: each digit, with chance `rate`, one up or down (mod 10), which is
        what a wrong carry does to it."""
        return "".join(str((int(d) + rng.choice((-1, 1))) % 10) if rng.random() < rate else d for d in answer)

    def extract(self, text: str) -> str | None:
        """The first number of a response (what is checked and voted on)."""
        return first_number(text)

    def check(self, problem: Problem, text: str) -> bool:
        return self.extract(text) == problem.answer


@dataclass(frozen=True)
class ReversalTask(HeldOutSplit):
    """A `length`-digit sequence written backwards ("Reverse 0418..." -> "...8140").

    Each answer digit is a copy of one question digit, but a copy from a place that moves two
    positions for every digit written, which a tiny model learns only roughly: at temperature
    1 its answers slip a digit here and there, at random places, so most samples are wrong
    somewhere while, position by position, most samples are right. A vote over whole answers
    then has little to count, while an aggregator that reads the drafts side by side (every
    draft as long as the answer, digit i of each at the same distance from answer digit i)
    can write the answer none of them wrote.
    """

    length: int = 16
    name: str = "toy reversal"

    @staticmethod
    def is_held_out(digits: str) -> bool:
        """One sequence in 16, by a fixed hash: evaluation draws only these, training never."""
        return int(digits) * 2654435761 % 16 == 0

    @staticmethod
    def question(digits: str) -> str:
        return f"Reverse {digits}"

    def _problems(self, n: int, seed: int, *, held_out: bool) -> list[Problem]:
        rng = random.Random(seed)
        problems: list[Problem] = []
        while len(problems) < n:
            digits = "".join(rng.choice("0123456789") for _ in range(self.length))
            if self.is_held_out(digits) == held_out:
                problems.append(Problem([{"role": "user", "content": self.question(digits)}], digits[::-1]))
        return problems

    @staticmethod
    def slipped(answer: str, rate: float, rng: random.Random) -> str:
        """`answer` with slips: each digit, with chance `rate`, another digit."""
        return "".join(rng.choice([o for o in "0123456789" if o != d]) if rng.random() < rate else d for d in answer)

    def extract(self, text: str) -> str | None:
        """The first run of digits of a response."""
        return first_number(text)
