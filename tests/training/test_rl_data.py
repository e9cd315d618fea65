"""The rows of `aft data rl`: hard and easy groups at the share asked for, round-2 and K-subset
prompts, and prompts that are the service's own, message for message and token for token."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from serving.format import AGGREGATION_TEMPLATE, aggregator_messages
from tests.training.test_prompt_parity import CONVERSATION, DRAFTS, served_messages, service_ids
from training.rewards import make_check
from training.rl_data import RLGroup, RLMix, is_hard, rl_row, rl_rows, validate_rl_rows
from training.rows import DataError

CHECK = make_check("task:reversal")


def group(i: int, right: int, n: int = 5, aggregations: int = 0) -> RLGroup:
    """Query i with `right` of its n drafts right (the answer is str(i)), and some aggregations."""
    answer = str(1000 + i)
    drafts = [answer] * right + [str(2000 + j) for j in range(n - right)]
    return RLGroup([{"role": "user", "content": f"Reverse {answer[::-1]}"}], answer, drafts,
                   [f"{answer} agg{j}" for j in range(aggregations)])


def test_hard_means_the_drafts_majority_is_wrong() -> None:
    assert is_hard(["1", "2", "3"], "1", CHECK)
    assert is_hard(["1", "1", "2", "3"], "1", CHECK)  # half right is no majority
    assert not is_hard(["1", "1", "2"], "1", CHECK)


def test_hard_and_easy_rows_are_kept_at_the_share_asked_for() -> None:
    groups = [group(i, right=1) for i in range(30)] + [group(100 + i, right=4) for i in range(70)]
    rows, summary = rl_rows(groups, CHECK, RLMix(hard_share=0.5, round2_share=0, subset_share=0), seed=1)
    assert (summary["hard"], summary["easy"], summary["rows"]) == (30, 30, 60)  # every hard row, as many easy
    assert summary["available"] == {"hard": 30, "easy": 70}
    assert Counter(r["hard"] for r in rows) == {True: 30, False: 30}
    rows, summary = rl_rows(groups, CHECK, RLMix(hard_share=0.25, round2_share=0, subset_share=0), seed=1)
    assert (summary["hard"], summary["easy"]) == (23, 70)  # 70 easy rows allow 23 hard at 1 in 4
    rows, summary = rl_rows(groups, CHECK, RLMix(hard_share=0.5, round2_share=0, subset_share=0), limit=10)
    assert (summary["hard"], summary["easy"]) == (5, 5)


def test_with_one_kind_missing_the_other_is_kept_alone() -> None:
    _, summary = rl_rows([group(i, right=5) for i in range(8)], CHECK, RLMix(hard_share=0.5))
    assert (summary["hard"], summary["easy"]) == (0, 8)


def test_round_2_prompts_read_the_aggregations_and_subset_prompts_k_drafts() -> None:
    groups = [group(i, right=i % 6, n=5, aggregations=5) for i in range(400)]
    rows, summary = rl_rows(groups, CHECK, RLMix(hard_share=0.5, round2_share=0.3, subset_share=0.3, subset_k=3),
                            seed=2)
    by_answer = {g.answer: g for g in groups}
    kinds = Counter()
    for row in rows:
        source = by_answer[row["answer"]]
        read = [line.split(". ", 1)[1] for line in row["prompt"][0]["content"].split("\n") if line[:2] in
                ("1.", "2.", "3.", "4.", "5.")]
        if row["round"] == 2:
            kinds["round 2"] += 1
            assert read == source.aggregations and (row["reads"], row["of"]) == (5, 5)
        elif row["reads"] < row["of"]:
            kinds["subset"] += 1
            assert len(read) == 3 and set(read) <= set(source.drafts) and row["of"] == 5
        else:
            kinds["full"] += 1
            assert read == source.drafts
        assert row["hard"] == is_hard(read, row["answer"], CHECK)
    assert kinds == summary["kinds"]
    assert all(60 <= kinds[k] <= 140 for k in ("round 2", "subset")), kinds  # about 30% each
    assert summary["hard"] == summary["easy"]


def test_a_group_without_aggregations_gets_a_round_1_prompt() -> None:
    rows, summary = rl_rows([group(i, right=2) for i in range(50)], CHECK, RLMix(round2_share=1.0, subset_share=0))
    assert all(r["round"] == 1 for r in rows) and summary["kinds"] == {"full": summary["rows"]}


@pytest.mark.parametrize("mix", [{"hard_share": 1.5}, {"round2_share": 0.7, "subset_share": 0.5}, {"subset_k": 0}])
def test_a_mix_that_cannot_be_is_refused(mix: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RLMix(**mix)


def test_rows_without_a_usable_prompt_are_named_by_line() -> None:
    good = rl_row(CONVERSATION, DRAFTS, "six", round_=1, of=3, hard=False)
    with pytest.raises(DataError, match=r"rl\.jsonl: line 2: 'prompt'"):
        validate_rl_rows([good, {"prompt": "text", "answer": "x"}], source="rl.jsonl")
    with pytest.raises(DataError, match="line 1: the prompt ends with an assistant turn"):
        validate_rl_rows([{"prompt": [*CONVERSATION, {"role": "assistant", "content": "x"}]}])
    with pytest.raises(DataError, match="no rows"):
        validate_rl_rows([])


@pytest.mark.parametrize("rounds", [1, 2])
async def test_an_rl_prompt_is_the_served_prompt_message_for_message_and_token_for_token(
        tiny_model: Path, rounds: int) -> None:
    from transformers import AutoTokenizer

    served = await served_messages(rounds)
    # The scripted backend answers every aggregation "final": that is what round 2 reads.
    read = DRAFTS if rounds == 1 else ["final"] * len(DRAFTS)
    row = rl_row(CONVERSATION, read, "six", round_=rounds, of=len(DRAFTS), hard=False)
    assert row["prompt"] == served == aggregator_messages(CONVERSATION, read)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    # GRPOTrainer renders a conversational prompt with the chat template and the generation prompt.
    trained = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True,
                                            return_dict=True)["input_ids"]
    assert list(trained) == await service_ids(tokenizer, served)


@pytest.mark.parametrize(("flags", "message"), [
    (["--reward", "nonsense"], "unknown reward 'nonsense'"),
    (["--hard-share", "2"], "hard_share must be within 0..1"),
    (["--sft-ratio", "0.25"], "--sft-ratio: RL rows are aggregation prompts only"),
])
def test_aft_data_rl_refuses_a_bad_reward_or_mix_before_any_engine_starts(
        tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str) -> None:
    from training.data_cli import main

    code = main(["rl", str(tmp_path / "queries.jsonl"), "-o", str(tmp_path / "rl.jsonl"), "--model", str(tiny_model),
                 *flags])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "rl.jsonl").exists()


def test_aft_data_rl_builds_the_prompts_of_the_checkpoints_format(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A conversation-first checkpoint is trained on by reward in its own layout, unless told otherwise."""
    import training.data_cli as data_cli
    from aft.cli import main

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "aft.json").write_text('{"format_version": 1, "format": "conversation-first"}')
    source = tmp_path / "queries.jsonl"
    source.write_text("".join(f'{{"prompt": "Reverse {i}", "reference": "{i}"}}\n' for i in range(4)))

    async def groups(args: Any, rows: Any, workdir: str) -> list[RLGroup]:
        return [group(i, right=1, n=3, aggregations=3) for i in range(8)]

    monkeypatch.setattr(data_cli, "_sample_rl", groups)
    for flags, drafts_last in (([], True), (["--format", "paper"], False)):
        out = tmp_path / f"rl{len(flags)}.jsonl"
        assert main(["data", "rl", str(source), "-o", str(out), "--model", str(model), "--reward", "exact",
                     "--hard-share", "1.0", *flags]) == 0
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert rows and all(row["prompt"][-1]["content"].startswith(AGGREGATION_TEMPLATE) is drafts_last
                            for row in rows)
        assert json.loads(out.with_suffix(".summary.json").read_text())["format"] == (
            "conversation-first" if drafts_last else "paper")
