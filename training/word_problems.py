"""Word problems: short arithmetic stories in English with one whole-number answer, made here.

The task `aft eval --task word` and the SmolLM2 recipe (docs/training.md) use: "Mia has 14
stickers. She gives 5 of them to her brother. How many stickers does Mia have now?". Every
problem comes from a template below and two or three numbers drawn by a seeded generator, so
the set is this project's own (Apache-2.0, like the rest of the repository), needs no download,
and is as large as asked. The answer is computed, never written by hand, and a response is
checked by the last whole number it gives (a small chat model restates the question's numbers
first: "14 - 5 = 9"). On this mix of one- and two-step stories
SmolLM2-135M-Instruct answers 8-13% right with one answer and 27% with the best of three drafts
(docs/results.md): hard for it, but a range where choosing among drafts can matter.

`python -m training.word_problems --problems 400 -o data/word-train.jsonl` writes training
queries (`prompt`, `reference`) for `aft data on-policy`; they are never held-out ones.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from training.tasks import HeldOutSplit, Problem

NAMES = ("Mia", "Tom", "Ava", "Leo", "Zoe", "Sam", "Lily", "Ben", "Emma", "Noah", "Ella", "Jack")
ITEMS = ("apples", "stickers", "marbles", "books", "pencils", "cookies", "stamps", "coins", "shells", "cards")

Numbers = tuple[int, ...]


@dataclass(frozen=True)
class Template:
    """A story with numbered blanks, how to draw its numbers, its answer from them, and the working
    that gets there (one line of arithmetic, as a teacher would write it)."""

    text: str
    draw: Callable[[random.Random], Numbers]
    answer: Callable[[Numbers], int]
    working: Callable[[Numbers], str]


def _pair(low: int, high: int) -> Callable[[random.Random], Numbers]:
    return lambda rng: (rng.randint(low, high), rng.randint(low, high))


def _difference(rng: random.Random) -> Numbers:
    a = rng.randint(8, 40)
    return a, rng.randint(2, a - 1)


def _two_steps(rng: random.Random) -> Numbers:
    a = rng.randint(5, 30)
    b = rng.randint(2, 20)
    return a, b, rng.randint(1, a + b - 1)


TEMPLATES: tuple[Template, ...] = (
    Template("{name} has {0} {item}. {pronoun} gets {1} more {item}. How many {item} does {name} have now?",
             _pair(3, 40), lambda n: n[0] + n[1], lambda n: f"{n[0]} + {n[1]} = {n[0] + n[1]}."),
    Template("{name} has {0} {item}. {pronoun} gives {1} of them to a friend. How many {item} does {name} have "
             "now?", _difference, lambda n: n[0] - n[1], lambda n: f"{n[0]} - {n[1]} = {n[0] - n[1]}."),
    Template("There are {0} {item} in a box and {1} {item} in a bag. How many {item} are there in all?",
             _pair(3, 40), lambda n: n[0] + n[1], lambda n: f"{n[0]} + {n[1]} = {n[0] + n[1]}."),
    Template("{name} buys {0} bags with {1} {item} in each bag. How many {item} does {name} buy?",
             _pair(2, 9), lambda n: n[0] * n[1], lambda n: f"{n[0]} x {n[1]} = {n[0] * n[1]}."),
    Template("{name} has {0} {item}, gets {1} more, then loses {2}. How many {item} does {name} have now?",
             _two_steps, lambda n: n[0] + n[1] - n[2],
             lambda n: f"{n[0]} + {n[1]} = {n[0] + n[1]}, and {n[0] + n[1]} - {n[2]} = {n[0] + n[1] - n[2]}."),
)

INSTRUCTION = "Answer with the number."
"""Appended to every question: an instruct model then ends with the number instead of an essay."""


@dataclass(frozen=True)
class WordProblemTask(HeldOutSplit):
    """Arithmetic word problems (TEMPLATES); a response is right when its last whole number is the answer."""

    name: str = "word problems"

    @staticmethod
    def is_held_out(question: str) -> bool:
        """One question in 4, by a fixed hash of its text: evaluation draws only these, training never."""
        return sum((i + 1) * ord(c) for i, c in enumerate(question)) * 2654435761 % 4 == 0

    @staticmethod
    def draw(rng: random.Random) -> tuple[str, int, str]:
        """One question (with INSTRUCTION), its answer, and its worked solution (`reference_answer`)."""
        template = rng.choice(TEMPLATES)
        numbers = template.draw(rng)
        name = rng.choice(NAMES)
        pronoun = "She" if name in ("Mia", "Ava", "Zoe", "Lily", "Emma", "Ella") else "He"
        story = template.text.format(*numbers, name=name, pronoun=pronoun, item=rng.choice(ITEMS))
        answer = template.answer(numbers)
        return f"{story} {INSTRUCTION}", answer, reference_answer(str(answer), template.working(numbers))

    def drawn(self, n: int, seed: int, *, held_out: bool) -> list[tuple[str, int, str]]:
        """`n` distinct (question, answer, worked solution), held out or training ones."""
        rng = random.Random(seed)
        drawn: list[tuple[str, int, str]] = []
        seen: set[str] = set()
        while len(drawn) < n:
            question, answer, solution = self.draw(rng)
            if self.is_held_out(question) == held_out and question not in seen:
                seen.add(question)
                drawn.append((question, answer, solution))
        return drawn

    def _problems(self, n: int, seed: int, *, held_out: bool) -> list[Problem]:
        return [Problem([{"role": "user", "content": question}], str(answer))
                for question, answer, _ in self.drawn(n, seed, held_out=held_out)]

    def extract(self, text: str) -> str | None:
        """The last whole number of a response ("1,200" read as 1200), or None when it gives none."""
        return last_number(text)


_NUMBER = re.compile(r"\d[\d,]*")


def last_number(text: str) -> str | None:
    """The last run of digits in `text` (thousands commas dropped, leading zeros too), or None."""
    numbers = [m.group(0).rstrip(",").replace(",", "") for m in _NUMBER.finditer(text)]
    return str(int(numbers[-1])) if numbers else None


def reference_answer(answer: str, working: str) -> str:
    """The training target for a problem whose answer is `answer`: its working, then the answer.
    With the working a small model learns to compute before it answers; "The answer is N." alone
    taught SmolLM2 to guess (docs/results.md)."""
    return f"{working} The answer is {answer}."


def write_queries(path: str | Path, n: int, seed: int) -> int:
    """`n` training problems as `aft data on-policy` queries (prompt, reference); returns how many."""
    rows = [{"prompt": question, "reference": solution, "answer": str(answer)}
            for question, answer, solution in WordProblemTask().drawn(n, seed, held_out=False)]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return len(rows)


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m training.word_problems") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Write training word problems (never held-out ones) "
                                                            "as JSONL queries for `aft data on-policy`.")
    parser.add_argument("-o", "--output", required=True, help="JSONL file to write (prompt, reference, answer).")
    parser.add_argument("--problems", type=int, default=400, help="How many.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the problems.")
    args = parser.parse_args(argv)
    print(f"{args.output}: {write_queries(args.output, args.problems, args.seed)} training problems")
    return 0


if __name__ == "__main__":
    sys.exit(main())
