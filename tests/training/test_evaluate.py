"""aft eval: the statistics, the rows it measures on a scripted backend, the files it writes, its refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

from serving.backends.base import Sampling
from serving.format import AGGREGATION_TEMPLATE
from tests.fakes import Call, ScriptedBackend
from training.evaluate import evaluate, main
from training.results import (
    AFT_DIRECT,
    AFT_GREEDY,
    AFT_PA,
    AFT_PROPOSAL_MAJORITY,
    AFT_PROPOSAL_ORACLE,
    SFT_DRAFT,
    SFT_GREEDY,
    SFT_MAJORITY,
    SFT_ONE,
    SFT_ORACLE,
    Results,
    Row,
    markdown_table,
    wilson_interval,
    write_results,
)
from training.tasks import MultiplicationTask, majority_vote


def test_wilson_interval_matches_known_values() -> None:
    low, high = wilson_interval(81, 100)
    assert (round(low, 4), round(high, 4)) == (0.7222, 0.8749)  # textbook: 81/100 -> 0.722..0.875
    assert wilson_interval(0, 50)[0] == 0.0 and 0 < wilson_interval(0, 50)[1] < 0.08
    assert wilson_interval(50, 50)[1] == pytest.approx(1.0) and wilson_interval(50, 50)[0] > 0.92
    # All right: the upper bound is 1 exactly, not a rounding below it (a plot's error bar would be negative).
    assert wilson_interval(500, 500)[1] == 1.0 and wilson_interval(0, 500)[0] == 0.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_interval_narrows_with_more_problems() -> None:
    small, large = wilson_interval(60, 100), wilson_interval(600, 1000)
    assert small[1] - small[0] > 2.5 * (large[1] - large[0])


def test_majority_vote_counts_whole_answers_and_breaks_ties_by_first_seen() -> None:
    assert majority_vote(["12", "13", "12"]) == "12"
    assert majority_vote(["13", "12", "12", "13"]) == "13"
    assert majority_vote([None, None, "7"]) == "7"
    assert majority_vote([None]) is None
    assert majority_vote([]) is None


def scripted_multiplier(call: Call, i: int) -> str:
    """Aggregations always right; greedy always wrong; other samples right at odd indexes only."""
    a, k = map(int, re.findall(r"\d+", call.messages[-1]["content"]))
    if AGGREGATION_TEMPLATE in call.messages[0]["content"]:
        return str(a * k)
    if call.sampling.temperature == 0:
        return str(a * k + 1)
    return str(a * k) if i % 2 else str(a * k + 10 * i + 1)  # sample 0 wrong, 1 right, 2 wrong (differently)...


async def test_evaluate_measures_every_row_on_the_same_problems(tmp_path: Path) -> None:
    task = MultiplicationTask(4)
    sft, aft = ScriptedBackend(reply=scripted_multiplier), ScriptedBackend(reply=scripted_multiplier)
    draft, final = Sampling(1.0, 1.0, 16), Sampling(0.7, 1.0, 16)
    results = await evaluate(sft, aft, task, problems=20, seed=5, draft=draft, final=final,
                             proposals=[1, 2, 3], rounds=[1, 2])
    assert sft.started and sft.closed and aft.started and aft.closed
    assert results.problems == 20 and all(row.total == 20 for row in results.rows)
    assert results.find(SFT_GREEDY).accuracy == 0.0
    assert results.find(SFT_ONE).accuracy == 0.0  # sample 0 is a wrong one
    assert results.find(SFT_DRAFT).accuracy == 0.0
    # SFT drafts come in one request per step of the grid of N (n = 1, 1, 1 here), so each is a sample 0.
    assert results.find(SFT_MAJORITY, 2).accuracy == results.find(SFT_ORACLE, 2).accuracy == 0.0
    assert results.find(SFT_MAJORITY, 3).accuracy == results.find(SFT_ORACLE, 3).accuracy == 0.0
    assert results.find(AFT_GREEDY).accuracy == 0.0
    assert results.find(AFT_DIRECT).accuracy == 0.0
    for n in (1, 2, 3):
        for r in (1, 2):
            assert results.find(AFT_PA, n, r).accuracy == 1.0
    for r in (1, 2):  # each run's own proposals (sample 0 wrong, 1 right, 2 wrong differently): one is right
        assert results.find(AFT_PROPOSAL_MAJORITY, 3, r).accuracy == 0.0
        assert results.find(AFT_PROPOSAL_MAJORITY, 2, r).accuracy == 0.0  # a 1-1 tie goes to the first seen
        assert results.find(AFT_PROPOSAL_ORACLE, 3, r).accuracy == results.find(AFT_PROPOSAL_ORACLE, 2, r).accuracy == 1
    assert not any(row.method in (AFT_PROPOSAL_MAJORITY, AFT_PROPOSAL_ORACLE, SFT_ORACLE) and row.proposals == 1
                   for row in results.rows)
    # Drafts were sampled as asked, the final answer as asked, one request a layer.
    pa = [c for c in aft.calls if AGGREGATION_TEMPLATE in c.messages[0]["content"]]
    assert {c.sampling for c in aft.calls if c.n == 3} == {draft}
    assert final in {c.sampling for c in pa}


class CountingBackend(ScriptedBackend):
    """A scripted backend that counts its starts and closes (each start of a real engine costs minutes)."""

    starts: int = 0
    closes: int = 0

    async def start(self) -> None:
        self.starts += 1
        await super().start()

    async def close(self) -> None:
        self.closes += 1
        await super().close()


async def test_a_model_against_itself_starts_one_engine_and_measures_every_row() -> None:
    backend = CountingBackend(reply=scripted_multiplier)
    results = await evaluate(backend, backend, MultiplicationTask(4), problems=5, seed=5, draft=Sampling(1.0, 1.0, 16),
                             final=Sampling(0.7, 1.0, 16), proposals=[1, 3], rounds=[1])
    assert (backend.starts, backend.closes) == (1, 1)
    assert {row.method for row in results.rows} >= {SFT_ONE, SFT_MAJORITY, SFT_ORACLE, AFT_PA}


async def test_skip_baseline_measures_only_the_model_and_never_starts_the_baseline() -> None:
    sft, aft = CountingBackend(reply=scripted_multiplier), CountingBackend(reply=scripted_multiplier)
    results = await evaluate(sft, aft, MultiplicationTask(4), problems=5, seed=5, draft=Sampling(1.0, 1.0, 16),
                             final=Sampling(0.7, 1.0, 16), proposals=[1, 3], rounds=[1], skip_baseline=True)
    assert sft.starts == 0 and not sft.calls
    assert (aft.starts, aft.closes) == (1, 1)
    assert {row.method for row in results.rows} == {AFT_GREEDY, AFT_DIRECT, AFT_PA, AFT_PROPOSAL_MAJORITY,
                                                    AFT_PROPOSAL_ORACLE}


def test_write_results_writes_json_markdown_and_png(tmp_path: Path) -> None:
    results = Results("toy addition", 100, {"temperature": 1.0, "top_p": 1.0, "max_tokens": 16},
                      {"temperature": 0.7, "top_p": 1.0, "max_tokens": 16})
    results.rows = [Row(SFT_GREEDY, "sft", 1, 0, 70, 100), Row(SFT_DRAFT, "sft", 1, 0, 50, 100),
                    Row(SFT_MAJORITY, "sft", 4, 0, 60, 100), Row(AFT_DIRECT, "aft", 1, 0, 55, 100),
                    Row(AFT_PA, "aft", 1, 1, 60, 100), Row(AFT_PA, "aft", 4, 1, 90, 100),
                    Row(AFT_PA, "aft", 4, 2, 93, 100), Row(AFT_PROPOSAL_MAJORITY, "aft", 4, 1, 62, 100)]
    paths = write_results(results, tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert data["problems"] == 100 and len(data["rows"]) == 8
    assert data["rows"][5]["accuracy"] == 0.9 and data["rows"][5]["ci_low"] < 0.9 < data["rows"][5]["ci_high"]
    table = paths["markdown"].read_text()
    assert "| AFT, propose-and-aggregate | 4 | 1 | 90.0% | 82.6-94.5 | 90 / 100 |" in table
    assert sum(line.startswith("|") for line in table.splitlines()) == 10  # header, rule, 8 rows
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert markdown_table(results) in table


@pytest.mark.parametrize("flag", ["--model", "--baseline"])
def test_a_wrong_checkpoint_path_is_one_line_and_exit_2(flag: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good"
    good.mkdir()
    (good / "config.json").write_text("{}")
    paths = {"--model": str(good), "--baseline": str(good), flag: str(tmp_path / "missing")}
    argv = [arg for pair in paths.items() for arg in pair]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == f"aft eval: {flag} {tmp_path / 'missing'}: no such checkpoint directory\n"
    assert not (tmp_path / "out").exists()

    paths[flag] = str(tmp_path)  # a directory, but no checkpoint in it
    assert main([arg for pair in paths.items() for arg in pair]) == 2
    assert capsys.readouterr().err == f"aft eval: {flag} {tmp_path}: not a checkpoint (no config.json in it)\n"


def test_the_engine_is_built_from_the_flags_not_the_toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from training import evaluate as module

    engines: list[object] = []

    def record(model: str, baseline: str, task: object, engine: Any, **kwargs: Any) -> Results:
        engines.extend([engine(baseline), engine(model)])
        return Results("t", 0, {"temperature": 1.0, "top_p": 1.0}, {"temperature": 1.0, "top_p": 1.0})

    monkeypatch.setattr(module, "evaluate_checkpoints", record)
    monkeypatch.setattr(module, "write_results", lambda results, out: {})
    for name in ("aft", "sft"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    assert main(["--model", str(tmp_path / "aft"), "--baseline", str(tmp_path / "sft"), "--dtype", "bfloat16",
                 "--max-model-len", "8192", "--gpu-memory-utilization", "0.8", "--seed", "7"]) == 0
    sft, aft = engines
    assert (sft.model, aft.model) == (str(tmp_path / "sft"), str(tmp_path / "aft"))  # type: ignore[attr-defined]
    for engine in engines:
        assert (engine.dtype, engine.max_model_len, engine.gpu_memory_utilization,  # type: ignore[attr-defined]
                engine.seed, engine.max_num_seqs) == ("bfloat16", 8192, 0.8, 7, None)  # type: ignore[attr-defined]


def _hub_refusing(error: Exception) -> Any:
    def download(repo_id: str, filename: str) -> str:
        assert filename == "config.json"
        raise error

    return download


@pytest.mark.parametrize(("error", "why"), [
    (LocalEntryNotFoundError("offline"), "no such checkpoint directory, and the hub is unreachable with no copy "
                                         "in its cache"),
    (RepositoryNotFoundError("404", response=httpx.Response(404, request=httpx.Request("HEAD", "https://hf.co"))),
     "no such checkpoint directory, nor a model on the hub (or a private one)"),
])
def test_a_name_that_is_neither_a_directory_nor_a_hub_model_is_one_line(
        error: Exception, why: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A mistyped parent directory ("modls/toy") reads as a hub id: it is looked up before any engine starts."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _hub_refusing(error))
    good = tmp_path / "good"
    good.mkdir()
    (good / "config.json").write_text("{}")
    assert main(["--model", "modls/toy", "--baseline", str(good), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"aft eval: --model modls/toy: {why}\n"
    assert not (tmp_path / "out").exists()
