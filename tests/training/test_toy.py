"""The toy task, its tokenizer and model, the recipe's rows; a few-step run of the whole recipe (integration)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from serving.format import AGGREGATION_TEMPLATE, aggregator_messages, proposer_messages
from training.tasks import MultiplicationTask, Problem
from training.toy import aggregation_rows
from training.toy_config import RecipeConfig
from training.toy_model import ModelShape, build_model, build_tokenizer


def test_problems_are_reproducible_products_without_a_carry_out() -> None:
    task = MultiplicationTask(6)
    problems = task.problems(200, seed=3)
    assert problems == task.problems(200, seed=3) and problems != task.problems(200, seed=4)
    for problem in problems:
        a, k = (int(x) for x in problem.conversation[0]["content"][len("What is "):-1].split(" × "))
        assert 10**5 <= a < 10**6 and 2 <= k <= 9
        assert problem.answer == str(a * k) and len(problem.answer) == 6
        assert problem.conversation == [{"role": "user", "content": f"What is {a} × {k}?"}]


def test_training_never_sees_a_held_out_problem() -> None:
    task = MultiplicationTask(3)  # a small space, so a leak would show
    held_out = {p.conversation[0]["content"] for p in task.problems(300, seed=0)}
    training = {p.conversation[0]["content"] for p in task.training_problems(20_000, seed=0)}
    assert held_out and training and not held_out & training


def test_extract_and_check_read_the_first_number() -> None:
    task = MultiplicationTask(2)
    problem = Problem([{"role": "user", "content": "What is 21 × 2?"}], "42")
    assert task.extract("42") == "42" and task.extract(" 42 because 21 × 2") == "42"
    assert task.extract("no idea") is None
    assert task.check(problem, "42") and not task.check(problem, "43") and not task.check(problem, "")
    assert not task.check(problem, "421")


def test_slipped_drafts_are_off_by_one_digits_at_the_given_rate() -> None:
    rng = random.Random(0)
    assert MultiplicationTask.slipped("94247778", 0.0, rng) == "94247778"
    every = MultiplicationTask.slipped("90247778", 1.0, rng)
    assert all((int(s) - int(d)) % 10 in (1, 9) for s, d in zip(every, "90247778", strict=True))
    slipped = [MultiplicationTask.slipped("12345678", 0.3, rng) for _ in range(2000)]
    rate = sum(s != d for draft in slipped for s, d in zip(draft, "12345678", strict=True)) / 16_000
    assert 0.28 < rate < 0.32


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return build_tokenizer(tmp_path_factory.mktemp("toy-tokenizer"), MultiplicationTask(8))


def test_tokenizer_keeps_digits_single_and_the_template_cheap(tokenizer) -> None:  # type: ignore[no-untyped-def]
    digits = tokenizer.encode("31415926", add_special_tokens=False)
    assert [tokenizer.decode([t]) for t in digits] == list("31415926")
    conversation = [{"role": "user", "content": "What is 31415926 × 3?"}]
    drafts = ["94247778", "94247768", "94247778", "94347778", "94247778"]
    text = tokenizer.apply_chat_template(aggregator_messages(conversation, drafts), tokenize=False,
                                         add_generation_prompt=True)
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text  # lossless round trip of the served bytes
    assert AGGREGATION_TEMPLATE in text
    assert len(ids) < 120  # 5 x 8 digits + 9 operand digits + the template in a few dozen tokens
    plain = tokenizer.apply_chat_template(proposer_messages(conversation), tokenize=False, add_generation_prompt=True)
    assert len(tokenizer.encode(plain, add_special_tokens=False)) < 45


def test_model_is_vllm_shaped(tokenizer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = build_model(tmp_path / "m", tokenizer, ModelShape(hidden_size=64, layers=1))
    config = json.loads((path / "config.json").read_text())
    assert config["head_dim"] == 64 and config["vocab_size"] == len(tokenizer)
    assert tokenizer.convert_tokens_to_ids("<|end|>") in config["eos_token_id"]
    assert (path / "tokenizer.json").is_file()


def test_aggregation_rows_read_1_to_n_drafts_and_target_the_reference() -> None:
    task = MultiplicationTask(4)
    problems = task.training_problems(40, seed=1)
    rng = random.Random(0)
    drafts = [[str(int(p.answer) + rng.choice([0, 0, 1, 10])) for _ in range(8)] for p in problems]
    rows = aggregation_rows(problems, drafts, max_proposals=8, seed=0)
    assert len(rows) == 40 and all(AGGREGATION_TEMPLATE in r["prompt"][0]["content"] for r in rows)
    answers = {p.conversation[0]["content"]: p.answer for p in problems}
    sizes = set()
    for row in rows:
        assert row["completion"] == [{"role": "assistant", "content": answers[row["prompt"][-1]["content"]]}]
        sizes.add(row["prompt"][0]["content"].count("\n") - AGGREGATION_TEMPLATE.count("\n"))
    assert min(sizes) >= 1 and max(sizes) <= 8 and len(sizes) > 3


@pytest.mark.integration
def test_the_whole_recipe_runs_and_evaluates_in_a_few_steps(tmp_path: Path) -> None:
    """Every stage on the real code paths (TRL twice, vLLM three times), a handful of steps each."""
    import importlib.util
    import os

    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed")
    from scripts.launch import CPU_ENGINE_ENV
    from serving.manifest import read_manifest
    from training import evaluate, results
    from training.rows import is_aft_row, read_jsonl
    from training.toy import run_recipe

    os.environ.update(CPU_ENGINE_ENV)
    config = RecipeConfig(digits=4, shape=ModelShape(hidden_size=64, layers=1, heads=1), sft_examples=64,
                          sft_steps=4, sft_batch_size=16, aft_queries=16, aft_max_proposals=3, aft_steps=3,
                          aft_batch_size=8)
    out = run_recipe(tmp_path / "toy", config)
    manifest = read_manifest(out)
    assert manifest is not None and manifest.recommended.proposal_temperature == config.proposal_temperature
    assert (tmp_path / "toy-work" / "sft" / "final" / "config.json").is_file()
    timings = json.loads((tmp_path / "toy-work" / "timings.json").read_text())
    assert set(timings) == {"tokenizer and model", "SFT", "on-policy drafts", "AFT", "export", "total"}
    rows = read_jsonl(tmp_path / "toy-work" / "aft" / "rows.jsonl")
    plain = [row for row in rows if not is_aft_row(row)]
    assert len(rows) - len(plain) == 16
    # The plain rows' targets are what the 4-step SFT model said (blank answers left out), not the products.
    assert 0 < len(plain) <= 4
    assert not any(row["completion"][0]["content"] == _product(row["prompt"][-1]["content"]) for row in plain)

    written = tmp_path / "results"
    code = evaluate.main([
        "--model", str(out), "--baseline", str(tmp_path / "toy-work" / "sft" / "final"), "--digits", "4",
        "--problems", "6", "--proposals", "1,2", "--rounds", "1", "--out", str(written),
        "--dtype", "float32", "--max-model-len", "512", "--gpu-memory-utilization", "0.3"])
    assert code == 0
    data = json.loads((written / "results.json").read_text())
    assert {row["method"] for row in data["rows"]} >= {results.SFT_GREEDY, results.AFT_PA}
    assert all(row["total"] == 6 for row in data["rows"])
    assert (written / "accuracy.png").is_file() and (written / "results.md").is_file()


def _product(question: str) -> str:
    a, k = re.findall(r"\d+", question)
    return str(int(a) * int(k))


class _Answering:
    """A stand-in for a transformers model: `generate` appends, greedy, what `answer(question)` says."""

    def __init__(self, tokenizer: Any, answer: Any) -> None:
        self.tokenizer, self.answer, self.training, self.device = tokenizer, answer, True, "cpu"

    def eval(self) -> None:
        self.training = False

    def train(self, mode: bool = True) -> None:
        self.training = mode

    def generate(self, input_ids: Any, attention_mask: Any, *, do_sample: bool, **kwargs: Any) -> Any:
        import torch

        assert not do_sample and not self.training
        assert (attention_mask[:, -1] == 1).all()  # padded on the left: every prompt ends at the same place
        prompts = self.tokenizer.batch_decode(input_ids, skip_special_tokens=True)
        answers = [self.tokenizer.encode(self.answer(re.search(r"What is .*\?", p).group(0)) + "<|end|>",
                                         add_special_tokens=False) for p in prompts]
        width = max(len(a) for a in answers)
        pad = self.tokenizer.pad_token_id
        tails = torch.tensor([a + [pad] * (width - len(a)) for a in answers])
        return torch.cat([input_ids, tails], dim=1)


def test_greedy_accuracy_reads_the_answers_of_the_proposer_prompt(tokenizer) -> None:  # type: ignore[no-untyped-def]
    from training.stop import greedy_accuracy

    task = MultiplicationTask(8)
    problems = task.training_problems(300, seed=3)  # more than one batch of 128
    truth = {p.conversation[0]["content"]: p.answer for p in problems}
    wrong = set(list(truth)[::4])  # every fourth question answered off by one

    def answer(question: str) -> str:
        return str(int(truth[question]) + (question in wrong))

    model = _Answering(tokenizer, answer)
    side = tokenizer.padding_side
    assert greedy_accuracy(model, tokenizer, task, problems, max_new_tokens=12) == 1 - len(wrong) / len(problems)
    assert model.training and tokenizer.padding_side == side  # put back as they were


def test_the_command_line_reaches_the_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from training import toy

    seen: list[Any] = []
    monkeypatch.setattr(toy, "run_recipe", lambda out, config, work_dir: seen.append((out, config, work_dir)))
    assert toy.main(["--out", str(tmp_path / "m"), "--no-eval", "--seed", "3", "--plain-targets", "reference",
                     "--sft-steps", "10"]) == 0
    (out, config, work), = seen
    assert (out, work) == (tmp_path / "m", tmp_path / "m-work")
    assert (config.seed, config.aft_plain_targets, config.sft_steps, config.sft_examples) == (3, "reference", 10, 640)
    assert config.task == "multiplication" and RecipeConfig().aft_plain_targets == "sampled"
    with pytest.raises(ValueError, match="aft_plain_targets"):
        RecipeConfig(aft_plain_targets="gold")
