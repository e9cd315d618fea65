"""Off-policy building from UltraFeedback-layout rows (tests/training/fixtures/ultrafeedback.jsonl).

The fixture: 6 prompts with UltraFeedback's fields (per-aspect "annotations" with string
ratings, fine-grained_score, overall_score); one has no ratings, one a single completion,
one a response repeated verbatim by two models, one where overall_score and the aspect
ratings disagree on the best.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from serving.format import aggregator_messages
from tests.training.aft_fixtures import FIXTURES
from training.data import (
    DataError,
    Sample,
    completion_score,
    conversation_of,
    load_rows,
    off_policy_examples,
    off_policy_samples,
    validate_rows,
)

SOURCE = FIXTURES / "ultrafeedback.jsonl"


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    return load_rows(str(SOURCE))


def by_query(samples: list[Sample]) -> dict[str, Sample]:
    return {s.conversation[-1]["content"]: s for s in samples}


def test_target_is_the_best_rated_and_never_a_proposal(rows: list[dict[str, Any]]) -> None:
    samples = by_query(off_policy_samples(rows, n=3, shuffle=False))
    assert len(samples) == 4  # no ratings / a single completion: skipped
    france = samples["What is the capital of France?"]
    assert france.target == "The capital of France is Paris, on the Seine."
    assert sorted(france.proposals) == sorted(
        ["Paris is the capital.", "I think it is Lyon.", "France's capital: Paris."])
    # Aspect ratings rank first: gpt-3.5 (all 5s) over mpt-30b (overall_score 8.5 > 8.0).
    assert samples["Name a prime number greater than 10."].target == "11 is prime."
    # A tie goes to the first listed; its verbatim duplicate by another model is no proposal either.
    german = samples["Translate 'thank you' into German."]
    assert german.target == "Danke." and sorted(german.proposals) == ["Danke schön.", "Merci."]
    for sample in samples.values():
        assert sample.target not in sample.proposals


def test_options_n_score_reference_and_target_in_proposals(rows: list[dict[str, Any]]) -> None:
    assert {len(s.proposals) for s in off_policy_samples(rows, n=1)} == {1}
    by_overall = by_query(off_policy_samples(rows, score="overall_score", shuffle=False))
    assert by_overall["Name a prime number greater than 10."].target == "13 is a prime number."

    included = off_policy_samples(rows, n=4, target_in_proposals=True, seed=5)
    assert len(included) == 5  # the single-completion row is now usable: its answer is its draft
    assert all(s.target in s.proposals for s in included)
    positions = {s.proposals.index(s.target) for s in off_policy_samples(rows, n=4, target_in_proposals=True)}
    assert len(positions) > 1  # the best draft is not always in the same place

    with_reference = [dict(r, reference=f"ref {i}") for i, r in enumerate(rows)]
    samples = off_policy_samples(with_reference, reference="reference", n=4, shuffle=False)
    assert [s.target for s in samples] == [f"ref {i}" for i in range(6)]
    assert len(samples[0].proposals) == 4  # every completion may be a draft: none is the target


def test_shuffle_seed_and_limit(rows: list[dict[str, Any]]) -> None:
    first = off_policy_samples(rows, seed=1)
    assert first == off_policy_samples(rows, seed=1)
    orders = {tuple(s.target for s in off_policy_samples(rows, seed=seed)) for seed in range(6)}
    assert len(orders) > 1
    assert [s.target for s in off_policy_samples(rows, shuffle=False, limit=2)] == [
        "The capital of France is Paris, on the Seine.", "11 is prime."]
    assert len(off_policy_samples(rows, limit=3, seed=4)) == 3


def test_examples_are_valid_aggregator_rows(rows: list[dict[str, Any]]) -> None:
    examples = off_policy_examples(rows, n=2, shuffle=False)
    assert validate_rows(examples) == 4
    sample = off_policy_samples(rows, n=2, shuffle=False)[0]
    assert examples[0]["prompt"] == aggregator_messages(sample.conversation, sample.proposals)
    assert examples[0]["completion"] == [{"role": "assistant", "content": sample.target}]


def test_scores_and_queries_from_other_layouts() -> None:
    assert completion_score({"ratings": [3, "5", "N/A"]}) == 4.0
    assert completion_score({"overall_score": 6}) == 6.0
    assert completion_score({"fine-grained_score": 4.5, "overall_score": 9}) == 4.5
    assert completion_score({"annotations": {"honesty": {"Rating": "N/A"}}}) is None
    assert conversation_of({"prompt": "hi"}) == [{"role": "user", "content": "hi"}]
    chat = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert conversation_of({"messages": chat}) == chat
    with pytest.raises(DataError, match=r"line 3: .*must end with a user message"):
        conversation_of({"messages": [*chat, {"role": "assistant", "content": "a"}]}, 3)
    with pytest.raises(DataError, match="line 2: no query"):
        off_policy_samples([{"instruction": "q", "completions": []}, {"completions": []}], shuffle=False)


def test_load_rows_reads_datasets_sources(tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    # A `datasets` source: here a JSON-lines file under a .json name and a parquet file.
    as_json = tmp_path / "uf.json"
    as_json.write_text(SOURCE.read_text())
    loaded = load_rows(str(as_json))
    assert [r["instruction"] for r in loaded] == [r["instruction"] for r in rows]
    import datasets

    datasets.Dataset.from_list([{"instruction": "q", "completions": [{"response": "a", "overall_score": 1.0}]}]
                               ).to_parquet(tmp_path / "uf.parquet")
    assert load_rows(str(tmp_path / "uf.parquet"))[0]["completions"][0]["response"] == "a"
    with pytest.raises(ValueError, match="unknown file type"):
        (tmp_path / "uf.txt").write_text(json.dumps({}))
        load_rows(str(tmp_path / "uf.txt"))
