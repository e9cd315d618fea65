"""`aft data`, `aft train`, `aft export` end to end through the `aft` entry point."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from aft.cli import main
from serving.format import AGGREGATION_TEMPLATE, AggregationFormat
from serving.manifest import read_manifest
from tests.training.aft_fixtures import FIXTURES
from training.rows import is_aft_row, read_jsonl, summary_path, validate_jsonl, write_jsonl


def test_data_off_policy_writes_valid_rows_and_their_recipe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data" / "train.jsonl"
    argv = ["data", "off-policy", str(FIXTURES / "ultrafeedback.jsonl"), "-o", str(out), "--n", "2",
            "--sft-ratio", "0.5", "--seed", "3"]
    assert main(argv) == 0
    assert "4 aggregation + 2 plain examples" in capsys.readouterr().out
    assert validate_jsonl(out) == 6
    recipe = json.loads(summary_path(out).read_text())
    assert recipe["builder"] == "off-policy" and recipe["n"] == 2 and recipe["target"] == "best-rated"
    assert recipe["target_in_proposals"] is False and recipe["sft_examples"] == 2
    first = out.read_bytes()
    assert main(argv) == 0 and out.read_bytes() == first  # seeded: the same file again


def test_data_validate_names_the_bad_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "rows.jsonl"
    good = {"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": "a"}]}
    write_jsonl([good, good, {**good, "completion": [{"role": "assistant", "content": ""}]}], path)
    assert main(["data", "validate", str(path)]) == 2
    assert capsys.readouterr().err.strip() == f"aft data validate: {path}: line 3: empty completion"
    path.write_text(json.dumps(good) + "\n")
    assert main(["data", "validate", str(path)]) == 0
    assert main(["train", "--model", "m", "--data", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err


def test_data_on_policy_refuses_a_wrong_model_path_before_any_engine(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "queries.jsonl"
    write_jsonl([{"prompt": "q", "reference": "a"}], source)
    assert main(["data", "on-policy", str(source), "-o", str(tmp_path / "out.jsonl"), "--model",
                 str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err == (
        f"aft data on-policy: --model {tmp_path / 'nowhere'}: no such checkpoint directory\n")
    assert not (tmp_path / "out.jsonl").exists()


def test_train_from_yaml_with_flag_overrides_then_export(tiny_model: Path, rows_file: Path, tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(f"model: {tiny_model}\ndata: {rows_file}\noutput_dir: {tmp_path / 'run'}\n"
                      "max_steps: 50\nbatch_size: 4\nlearning_rate: 1.0e-3\nbf16: false\nuse_cpu: true\n"
                      "gradient_checkpointing: false\nsave_steps: 1000\n")
    assert main(["train", "--config", str(config), "--max-steps", "2", "--export-dir", str(tmp_path / "served")]) == 0
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    assert state["global_step"] == 2  # the flag won over the file
    manifest = read_manifest(tmp_path / "served")
    assert manifest is not None and manifest.base_model == str(tiny_model)
    assert manifest.data["examples"] == len(read_jsonl(rows_file))

    assert main(["export", str(tmp_path / "run" / "final"), str(tmp_path / "again"), "--proposals", "4",
                 "--top-p", "0.9"]) == 0
    again = read_manifest(tmp_path / "again")
    assert again is not None and again.recommended.as_dict() == {"proposals": 4, "top_p": 0.9}


def test_a_conversation_first_checkpoint_from_data_to_aft_json(tiny_model: Path, tmp_path: Path) -> None:
    """`aft data --format conversation-first` builds rows whose drafts follow the conversation; the
    summary records it, and the checkpoint trained on them declares it in aft.json (`aft export
    --format` may say otherwise)."""
    rows = tmp_path / "cf.jsonl"
    assert main(["data", "off-policy", str(FIXTURES / "ultrafeedback.jsonl"), "-o", str(rows), "--n", "2",
                 "--sft-ratio", "0.5", "--format", "conversation-first"]) == 0
    built = read_jsonl(rows)
    aft = [row for row in built if is_aft_row(row)]
    assert len(aft) == 4 and len(built) == 6
    for row in aft:
        assert row["prompt"][0] == {"role": "system", "content": "\n"}  # the proposer prompt comes first
        assert row["prompt"][-1]["role"] == "user" and row["prompt"][-1]["content"].startswith(AGGREGATION_TEMPLATE)
    assert json.loads(summary_path(rows).read_text())["format"] == "conversation-first"

    assert main(["train", "--model", str(tiny_model), "--data", str(rows), "--output-dir", str(tmp_path / "run"),
                 "--max-steps", "1", "--use-cpu", "--bf16", "false", "--gradient-checkpointing", "false",
                 "--export-dir", str(tmp_path / "served")]) == 0
    served = read_manifest(tmp_path / "served")
    assert served is not None and served.format is AggregationFormat.CONVERSATION_FIRST
    assert main(["export", str(tmp_path / "run" / "final"), str(tmp_path / "paper"), "--format", "paper"]) == 0
    assert read_manifest(tmp_path / "paper").format is AggregationFormat.PAPER  # type: ignore[union-attr]


@pytest.mark.integration
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")
def test_data_on_policy_samples_from_the_in_process_engine(tiny_model: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    source = tmp_path / "queries.jsonl"
    write_jsonl([{"prompt": f"What is {i} plus {i}?", "reference": f"It is {2 * i}."} for i in range(6)], source)
    out = tmp_path / "onpolicy.jsonl"
    assert main(["data", "on-policy", str(source), "-o", str(out), "--model", str(tiny_model), "--n", "3",
                 "--max-tokens", "8", "--limit", "4", "--max-model-len", "1024", "--dtype", "float32",
                 "--gpu-memory-utilization", "0.3", "--seed", "1"]) == 0
    rows = read_jsonl(out)
    assert len(rows) == 4 and validate_jsonl(out) == 4
    assert all(row["completion"][0]["content"].startswith("It is ") for row in rows)
    assert all("\n3. " in row["prompt"][0]["content"] for row in rows)  # three proposals each
    assert json.loads(summary_path(out).read_text())["model"] == str(tiny_model)
