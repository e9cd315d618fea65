"""Training rows: their shape, the validator's messages (with line numbers), SFT mixing, summaries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from serving.format import AGGREGATION_TEMPLATE, Message, aggregator_messages, proposer_messages
from training.rows import (
    DataError,
    aft_example,
    data_summary,
    is_aft_row,
    mix_sft,
    read_jsonl,
    sft_example,
    summary_path,
    validate_jsonl,
    validate_rows,
    write_jsonl,
)

CONVERSATION: list[Message] = [{"role": "user", "content": "Name a colour."}]


def test_aft_and_sft_rows_use_the_service_prompts() -> None:
    aft = aft_example(CONVERSATION, ["red", "blue"], "Red.")
    assert aft == {"prompt": aggregator_messages(CONVERSATION, ["red", "blue"]),
                   "completion": [{"role": "assistant", "content": "Red."}]}
    assert aft["prompt"][0]["content"].startswith(AGGREGATION_TEMPLATE) and is_aft_row(aft)
    sft = sft_example(CONVERSATION, "Red.")
    assert sft["prompt"] == proposer_messages(CONVERSATION) and not is_aft_row(sft)
    assert validate_rows([aft, sft]) == 2


def test_jsonl_round_trip_keeps_unicode(tmp_path: Path) -> None:
    rows = [sft_example([{"role": "user", "content": "Grüße, 世界"}], "ok")]
    path = tmp_path / "rows.jsonl"
    assert write_jsonl(rows, path) == 1
    assert "世界" in path.read_text(encoding="utf-8")
    assert read_jsonl(path) == rows


def _good() -> dict[str, Any]:
    return aft_example(CONVERSATION, ["red"], "Red.")


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda r: r.pop("prompt"), 'missing "prompt"'),
    (lambda r: r.update(completion=[{"role": "assistant", "content": "  "}]), "empty completion"),
    (lambda r: r.update(completion=[]), '"completion" must be a non-empty list'),
    (lambda r: r.update(completion=[{"role": "user", "content": "x"}]), "exactly one assistant message"),
    (lambda r: r["prompt"][1].update(role="human"), "prompt[1].role is 'human'"),
    (lambda r: r["prompt"][1].update(content=7), "prompt[1].content must be a string, got int"),
    (lambda r: r.update(prompt=r["prompt"][:1]), "must end with a user message, not 'system'"),
    (lambda r: r.update(prompt="hello"), '"prompt" must be a non-empty list'),
])
def test_validator_names_the_line_and_the_problem(tmp_path: Path, mutate: Any, message: str) -> None:
    bad = _good()
    mutate(bad)
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(_good()) + "\n\n" + json.dumps(_good()) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=r"line 4: ") as caught:  # the blank line counts
        validate_jsonl(path)
    assert message in str(caught.value) and caught.value.line == 4 and str(path) in str(caught.value)
    with pytest.raises(DataError, match=r"^line 2: "):
        validate_rows([_good(), bad])


def test_validator_rejects_bad_json_and_non_objects(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(_good()) + "\n{not json\n")
    with pytest.raises(DataError, match="line 2: invalid JSON"):
        validate_jsonl(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(DataError, match="line 1: expected a JSON object, got list"):
        validate_jsonl(path)
    path.write_text("\n")
    with pytest.raises(DataError, match="no rows"):
        validate_jsonl(path)


def test_mix_sft_adds_the_ratio_and_is_seeded() -> None:
    aft = [aft_example(CONVERSATION, ["d"], f"aft {i}") for i in range(8)]
    sft = [sft_example(CONVERSATION, f"sft {i}") for i in range(8)]
    mixed = mix_sft(aft, sft, 0.25, seed=1)
    assert len(mixed) == 10 and sum(not is_aft_row(r) for r in mixed) == 2
    assert mixed == mix_sft(aft, sft, 0.25, seed=1) != mix_sft(aft, sft, 0.25, seed=2)
    assert len(mix_sft(aft, sft[:3], 1.0)) == 11  # never more SFT rows than given
    with pytest.raises(ValueError):
        mix_sft(aft, sft, -1)


def test_data_summary_counts_and_keeps_the_recipe(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    write_jsonl([_good(), _good(), sft_example(CONVERSATION, "x")], path)
    summary_path(path).write_text(json.dumps({"builder": "off-policy", "n": 3}))
    summary = data_summary(path)
    assert summary["builder"] == "off-policy" and summary["n"] == 3
    assert (summary["examples"], summary["aft_examples"], summary["sft_examples"]) == (3, 2, 1)
    assert len(summary["sha256"]) == 64 and summary["file"] == "train.jsonl"
