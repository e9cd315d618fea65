"""aft eval's results: tokens per problem and per correct answer, the files written and read back, the two
plots' series."""

from __future__ import annotations

import json
from pathlib import Path

from training.results import (
    AFT_DIRECT,
    AFT_PA,
    AFT_PROPOSAL_MAJORITY,
    AFT_PROPOSAL_ORACLE,
    SFT_DRAFT,
    SFT_GREEDY,
    SFT_MAJORITY,
    SFT_ORACLE,
    Results,
    Row,
    accuracy_series,
    early_exit_method,
    markdown_table,
    read_results,
    subset_method,
    token_series,
    write_results,
)

PNG = b"\x89PNG\r\n\x1a\n"


def grid_results(shift: int = 0) -> Results:
    """A grid of N = 1, 3, 5, 8 and one and two rounds, with early exit and subset rows beside the full runs."""
    results = Results("toy reversal", 100, {"temperature": 1.0, "top_p": 1.0, "max_tokens": 16},
                      {"temperature": 0.7, "top_p": 1.0, "max_tokens": 16})
    results.rows = [Row(SFT_GREEDY, "sft", 1, 0, 40 + shift, 100, 1000), Row(SFT_DRAFT, "sft", 1, 0, 30, 100, 1000),
                    Row(AFT_DIRECT, "aft", 1, 0, 35, 100, 1000)]
    for n in (3, 5, 8):
        results.rows += [Row(SFT_MAJORITY, "sft", n, 0, 30 + n, 100, 1000 * n),
                         Row(SFT_ORACLE, "sft", n, 0, 40 + n, 100, 1000 * n)]
    for r in (1, 2):
        for n in (1, 3, 5, 8):
            results.rows.append(Row(AFT_PA, "aft", n, r, 50 + 4 * n + r + shift, 100, 1000 * (n + 1) * r))
            if n > 1:
                results.rows += [Row(AFT_PROPOSAL_MAJORITY, "aft", n, r, 30 + n, 100, 1000 * n),
                                 Row(AFT_PROPOSAL_ORACLE, "aft", n, r, 40 + n, 100, 1000 * n),
                                 Row(early_exit_method(1.0), "aft", n, r, 50 + 4 * n, 100, 800 * n * r,
                                     [20, 10][:r]),
                                 Row(subset_method(2), "aft", n, r, 48 + 4 * n, 100, 900 * n * r)]
    return results


def test_tokens_per_problem_and_per_correct_answer() -> None:
    row = Row(AFT_PA, "aft", 5, 1, 80, 100, 12_000)
    assert (row.tokens_per_problem, row.tokens_per_correct) == (120, 150)
    none_right = Row(AFT_PA, "aft", 5, 1, 0, 100, 12_000)
    assert none_right.tokens_per_problem == 120 and none_right.tokens_per_correct is None
    assert Row(AFT_PA, "aft", 5, 1, 0, 0).tokens_per_problem == 0


def test_the_methods_are_labelled_by_their_setting() -> None:
    assert early_exit_method(1.0) == "AFT, propose-and-aggregate, early exit when all drafts agree"
    assert early_exit_method(0.6) == "AFT, propose-and-aggregate, early exit when 60% of the drafts agree"
    assert subset_method(3) == "AFT, propose-and-aggregate, each aggregation reads K=3 of the N drafts"


def test_results_are_written_and_read_back(tmp_path: Path) -> None:
    results = grid_results()
    results.rows.append(Row(SFT_MAJORITY, "sft", 2, 0, 0, 100, 500))  # no answer right
    paths = write_results(results, tmp_path / "out")
    assert set(paths) == {"json", "markdown", "plot", "tokens"}
    assert read_results(paths["json"]) == results == read_results(tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    row = data["rows"][-1]
    assert (row["tokens"], row["tokens_per_problem"], row["tokens_per_correct"]) == (500, 5.0, None)
    for name in ("plot", "tokens"):
        assert paths[name].read_bytes()[:8] == PNG
    table = paths["markdown"].read_text()
    assert markdown_table(results) in table
    assert "| SFT, majority vote | 2 | 0 | 0.0% | 0.0-3.7 | 0 / 100 | 5.0 | – |  |" in table
    assert (f"| {early_exit_method(1.0)} | 5 | 2 | 70.0% | 60.4-78.1 | 70 / 100 | 80.0 | 114.3 | "
            "30.0% (round 0: 20.0%, round 1: 10.0%) |") in table


def test_results_without_token_counts_still_read_and_plot(tmp_path: Path) -> None:
    """results.json written before tokens were counted: no tokens, no early exits in its rows."""
    old = {"task": "toy multiplication", "problems": 10, "draft_sampling": {"temperature": 1.0, "top_p": 1.0},
           "final_sampling": {"temperature": 0.7, "top_p": 1.0}, "models": {}, "seconds": 1.0,
           "rows": [{"method": AFT_PA, "model": "aft", "proposals": 2, "rounds": 1, "correct": 8, "total": 10,
                     "accuracy": 0.8, "ci_low": 0.49, "ci_high": 0.94}]}
    (tmp_path / "results.json").write_text(json.dumps(old))
    results = read_results(tmp_path)
    assert results.rows[0].tokens == 0 and results.rows[0].early_exits == []
    assert "early exit" not in markdown_table(results)
    assert token_series(results) == []  # nothing to place on a log axis
    paths = write_results(results, tmp_path / "again")
    assert paths["tokens"].read_bytes()[:8] == PNG


def test_accuracy_plot_draws_the_full_pipeline_against_n_and_leaves_the_variants_out() -> None:
    results = grid_results()
    lines, levels = accuracy_series(results)
    drawn = {label: [(p.x, p.accuracy) for p in line.points] for line in (lines) for label in [line.label]}
    assert drawn[f"{AFT_PA}, 1 round"] == [(n, (50 + 4 * n + 1) / 100) for n in (1, 3, 5, 8)]
    assert [x for x, _ in drawn[f"{AFT_PA}, 2 rounds"]] == [1, 3, 5, 8]
    assert [x for x, _ in drawn["best of those proposals, pass@N (1)"]] == [3, 5, 8]
    assert drawn["SFT: best of N drafts, pass@N"] == [(1, 0.3), (3, 0.43), (5, 0.45), (8, 0.48)]
    assert not any("early exit" in label or "K=" in label for label in drawn)
    points = sum(len(line.points) for line in lines)
    assert points == 2 * 4 + 2 * 2 * 3 + 2 * 4  # p&a, its votes and best-of, SFT's two lines (with N=1)
    assert {level.label for level in levels} == {SFT_GREEDY, AFT_DIRECT}
    colours = {line.label: line.color for line in lines}
    assert colours[f"{AFT_PA}, 1 round"] == colours["best of those proposals, pass@N (1)"]


def test_token_plot_places_every_row_at_its_tokens_per_problem() -> None:
    results = grid_results()
    lines = token_series(results)
    placed = sorted((p.x, p.accuracy, p.note) for line in lines for p in line.points)
    assert placed == sorted((r.tokens_per_problem, r.accuracy, f"N={r.proposals}") for r in results.rows)
    labels = [line.label for line in lines]
    assert len(labels) == len(set(labels))
    assert f"{early_exit_method(1.0)}, 2 rounds" in labels and f"{subset_method(2)}, 1 round" in labels
    assert len({(line.color, line.marker, line.linestyle) for line in lines}) == len(lines)  # told apart
    by_label = {line.label: line for line in lines}
    one, two = by_label[f"{AFT_PA}, 1 round"], by_label[f"{AFT_PA}, 2 rounds"]
    assert (one.color, one.marker) == (two.color, two.marker) and one.linestyle != two.linestyle
    pa = next(line for line in lines if line.label == f"{AFT_PA}, 1 round")
    assert [p.note for p in pa.points] == ["N=1", "N=3", "N=5", "N=8"]
