"""Training rows: the chat-format JSONL that `aft data` writes and `aft train` reads.

A row is TRL's conversational prompt/completion format:

    {"prompt": [{"role": "system", ...}, *conversation], "completion": [{"role": "assistant", "content": target}]}

SFTTrainer trains on the completion tokens only (prompt tokens are masked). The prompt is
built by serving/format.py, the very functions the service renders its requests with, so
what the model is trained on is byte for byte what it is served (tests/training checks it
through the tokenizer). Both kinds of rows take these prompts:
- AFT rows: `aggregator_messages(conversation, proposals, fmt)`: read the drafts, write the answer
  (in the paper's layout, or conversation-first: `aft data --format`);
- SFT rows: `proposer_messages(conversation)`: answer directly, as the AFT model must too.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.format import AGGREGATION_TEMPLATE, AggregationFormat, Message, aggregator_messages, proposer_messages

Row = dict[str, Any]
_ROLES = ("system", "developer", "user", "assistant")


class DataError(ValueError):
    """A malformed row; `line` is its 1-based line in the file (or position in the list)."""

    def __init__(self, line: int, problem: str, *, source: str | None = None) -> None:
        super().__init__(f"{source + ': ' if source else ''}line {line}: {problem}")
        self.line = line
        self.problem = problem


def _row(prompt: Sequence[Message], target: str) -> Row:
    # Fresh message dicts: a row must not share (and later mutate) the caller's conversation.
    return {"prompt": [{"role": m["role"], "content": m["content"]} for m in prompt],
            "completion": [{"role": "assistant", "content": target}]}


def aft_example(conversation: Sequence[Message], proposals: Sequence[str], target: str,
                fmt: AggregationFormat = AggregationFormat.PAPER) -> Row:
    """An aggregation row: the aggregator prompt (layout `fmt`) over `proposals`, trained to write `target`."""
    return _row(aggregator_messages(conversation, proposals, fmt), target)


def sft_example(conversation: Sequence[Message], target: str) -> Row:
    """A plain answering row: the proposer prompt, trained to write `target`."""
    return _row(proposer_messages(conversation), target)


@dataclass(frozen=True)
class Sample:
    """One query with drafts of its answer and the answer to learn, before it becomes a row."""

    conversation: list[Message]
    proposals: list[str]
    target: str

    def aft_row(self, fmt: AggregationFormat = AggregationFormat.PAPER) -> Row:
        return aft_example(self.conversation, self.proposals, self.target, fmt)

    def sft_row(self) -> Row:
        return sft_example(self.conversation, self.target)


def write_jsonl(rows: Iterable[Row], path: str | Path) -> int:
    """Write one JSON object a line (UTF-8, not ASCII-escaped); returns how many."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def _lines(path: Path) -> Iterator[tuple[int, object]]:
    # Blank lines are skipped (a trailing newline is common) but still counted, so the
    # numbers in errors are the ones an editor shows.
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(number, f"invalid JSON: {exc.msg} (column {exc.colno})", source=str(path)) from None


def read_jsonl(path: str | Path) -> list[Row]:
    """The JSON objects of a JSONL file; DataError names the first line that is not one."""
    rows: list[Row] = []
    for number, value in _lines(Path(path)):
        if not isinstance(value, dict):
            raise DataError(number, f"expected a JSON object, got {type(value).__name__}", source=str(path))
        rows.append(value)
    return rows


def _message_problem(where: str, message: object) -> str | None:
    if not isinstance(message, dict):
        return f"{where} is not a message object"
    role, content = message.get("role"), message.get("content")
    if role not in _ROLES:
        return f"{where}.role is {role!r}; expected one of {', '.join(_ROLES)}"
    if not isinstance(content, str):
        return f"{where}.content must be a string, got {type(content).__name__}"
    return None


def row_problem(row: object) -> str | None:
    """What is wrong with a training row, or None when SFTTrainer can take it as it is."""
    if not isinstance(row, dict):
        return f"expected a JSON object, got {type(row).__name__}"
    for key in ("prompt", "completion"):
        if key not in row:
            return f'missing "{key}"'
        if not isinstance(row[key], list) or not row[key]:
            return f'"{key}" must be a non-empty list of messages'
        for i, message in enumerate(row[key]):
            if problem := _message_problem(f"{key}[{i}]", message):
                return problem
    if row["prompt"][-1]["role"] != "user":
        return f"the prompt must end with a user message, not {row['prompt'][-1]['role']!r}"
    completion = row["completion"]
    if len(completion) != 1 or completion[0]["role"] != "assistant":
        return '"completion" must be exactly one assistant message'
    if not completion[0]["content"].strip():
        return "empty completion"
    return None


def validate_rows(rows: Iterable[object]) -> int:
    """Raise DataError for the first malformed row (1-based position); returns the count."""
    count = 0
    for count, row in enumerate(rows, 1):
        if problem := row_problem(row):
            raise DataError(count, problem)
    return count


def validate_jsonl(path: str | Path) -> int:
    """Check every line of a training file; DataError names the first bad line. Returns the row count."""
    count = 0
    for number, row in _lines(Path(path)):
        if problem := row_problem(row):
            raise DataError(number, problem, source=str(path))
        count += 1
    if count == 0:
        raise DataError(1, "no rows", source=str(path))
    return count


def mix_sft(aft_rows: Sequence[Row], sft_rows: Sequence[Row], ratio: float, seed: int = 0) -> list[Row]:
    """AFT rows plus round(ratio * len(aft_rows)) SFT rows drawn at random (at most all), shuffled together.

    ratio is SFT rows per AFT row: 0.25 adds one plain answering example for every four
    aggregation examples, which keeps the fine-tuned model a good direct answerer.
    """
    if ratio < 0:
        raise ValueError(f"ratio must be >= 0, got {ratio}")
    rng = random.Random(seed)
    extra = rng.sample(list(sft_rows), min(len(sft_rows), round(ratio * len(aft_rows))))
    mixed = [*aft_rows, *extra]
    rng.shuffle(mixed)
    return mixed


def is_aft_row(row: Row) -> bool:
    """Whether a row is an aggregation example: its system message (paper) or its last user message
    (conversation-first) holds the aggregation template."""
    prompt = row["prompt"]
    return AGGREGATION_TEMPLATE in prompt[0]["content"] or (
        prompt[-1]["role"] == "user" and prompt[-1]["content"].startswith(AGGREGATION_TEMPLATE))


def summary_path(data_path: str | Path) -> Path:
    """Where `aft data` records how a file was built (train.jsonl -> train.summary.json)."""
    return Path(data_path).with_suffix(".summary.json")


def data_summary(path: str | Path) -> dict[str, Any]:
    """What a training file holds (counts, sha256), plus how it was built when its summary file exists."""
    path = Path(path)
    rows = read_jsonl(path)
    aft = sum(1 for row in rows if is_aft_row(row))
    recorded = json.loads(summary_path(path).read_text()) if summary_path(path).is_file() else {}
    return {**recorded, "file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "examples": len(rows), "aft_examples": aft, "sft_examples": len(rows) - aft}
