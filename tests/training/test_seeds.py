"""Several seeds' aft eval results in one table: the mean, each seed, the pooled interval and tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.test_results import grid_results
from training.results import AFT_PA, SFT_ORACLE, write_results
from training.seeds import combine, main


def test_seeds_combine_into_one_table_with_the_mean_and_each_seed(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    dirs = []
    for seed, shift in ((1, 0), (2, 2), (3, 7)):
        results = grid_results(shift)
        if seed == 3:
            results.rows = [r for r in results.rows if r.method != SFT_ORACLE]
        write_results(results, tmp_path / f"seed-{seed}")
        dirs.append(str(tmp_path / f"seed-{seed}"))
    page = combine(dirs)
    assert page.startswith("# toy reversal: 3 seeds\n")
    assert "| method | N | rounds | accuracy, mean | seed-1 | seed-2 | seed-3 | all seeds: 95% CI (Wilson) |" in page
    # AFT p&a at N=5, one round: 71, 73 and 78 of 100 right, 6,000 tokens each.
    assert f"| {AFT_PA} | 5 | 1 | 74.0% | 71.0% | 73.0% | 78.0% | 68.8-78.6 | 60.0 | 81.1 |" in page
    assert f"| {SFT_ORACLE} | 3 | 0 | 43.0% | 43.0% | 43.0% | – | 36.3-49.9 | 30.0 | 69.8 |" in page
    out = tmp_path / "seeds.md"
    assert main([*dirs, "--out", str(out)]) == 0
    assert out.read_text() == page == capsys.readouterr().out
    assert main([dirs[0], str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.endswith(f"no results.json in {tmp_path / 'nowhere'}\n")
