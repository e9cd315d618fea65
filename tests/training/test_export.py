"""Export: a LoRA run becomes a plain checkpoint (merged) with tokenizer, generation config and aft.json,
which transformers, the service's settings and (integration) the in-process vLLM backend load as it is."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings, with_manifest_defaults
from serving.format import FORMAT_VERSION
from serving.manifest import read_manifest
from tests.training.aft_fixtures import arithmetic_rows, tiny_config
from training.export import end_of_turn_ids, export
from training.rows import summary_path, write_jsonl
from training.train import train

RECOMMENDED = {"proposals": 3, "rounds": 1, "proposal_temperature": 0.9, "temperature": 0.5}


@pytest.fixture(scope="module")
def lora_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("lora")
    write_jsonl(arithmetic_rows(), directory / "rows.jsonl")
    summary_path(directory / "rows.jsonl").write_text(json.dumps({"builder": "off-policy", "n": 3}))
    return train(tiny_config(tiny_model, directory / "rows.jsonl", directory / "run", lora=True, lora_r=4,
                             max_steps=3, learning_rate=5e-2))


@pytest.fixture(scope="module")
def exported(lora_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(lora_run, tmp_path_factory.mktemp("export") / "model", recommended=RECOMMENDED)


def test_export_writes_a_complete_checkpoint_and_manifest(exported: Path, tiny_model: Path) -> None:
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja",
                 "generation_config.json", "aft.json"):
        assert (exported / name).is_file(), name
    assert not (exported / "adapter_config.json").exists()
    manifest = read_manifest(exported)
    assert manifest is not None and manifest.format_version == FORMAT_VERSION
    assert manifest.recommended.as_dict() == RECOMMENDED
    assert manifest.base_model == str(tiny_model)  # from the run's record
    assert manifest.data["builder"] == "off-policy" and manifest.data["examples"] == 16
    assert manifest.data["aft_examples"] == 12 and manifest.created


def test_generation_stops_at_the_templates_end_of_turn(exported: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(exported)
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    assert end_of_turn_ids(tokenizer) == [end]
    eos = json.loads((exported / "generation_config.json").read_text())["eos_token_id"]
    assert end in eos and tokenizer.eos_token_id in eos


def test_merged_weights_compute_what_base_plus_adapter_computes(exported: Path, lora_run: Path,
                                                                tiny_model: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(exported)
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), lora_run)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        want, got, untouched = (m(input_ids=ids).logits for m in (adapted, merged, base))
    assert torch.allclose(want, got, atol=1e-4)
    assert not torch.allclose(untouched, got, atol=1e-3)  # the adapter did change the model


def test_service_settings_take_the_manifest_defaults(exported: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = with_manifest_defaults(Settings(model=str(exported)))
    assert (settings.default_proposals, settings.default_rounds) == (3, 1)
    assert (settings.proposal_temperature, settings.temperature) == (0.9, 0.5)
    assert settings.proposal_top_p == 0.95  # not recommended: the service's default
    monkeypatch.setenv("AFT_DEFAULT_ROUNDS", "2")
    assert with_manifest_defaults(Settings(model=str(exported), temperature=0.2)).model_dump(
        include={"default_rounds", "temperature", "default_proposals"}) == {
        "default_rounds": 2, "temperature": 0.2, "default_proposals": 3}


def test_export_refuses_an_unknown_recommendation_before_writing(lora_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown recommended field"):
        export(lora_run, tmp_path / "out", recommended={"proposal": 5})
    assert not (tmp_path / "out").exists()


@pytest.fixture
def cpu_kv_cache() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
        yield


@pytest.mark.integration
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")
async def test_vllm_backend_serves_the_export(exported: Path, cpu_kv_cache: None, lora_run: Path) -> None:
    """The real in-process engine loads the export as it is and runs propose-and-aggregate on it."""
    from transformers import AutoTokenizer

    from app.backend import build_backend
    from serving.backends.base import Sampling
    from serving.backends.vllm import VLLMBackend
    from serving.pipeline import Pipeline, PipelineParams
    from training.rows import read_jsonl

    settings = with_manifest_defaults(Settings(model=str(exported), max_model_len=1024, dtype="float32",
                                               gpu_memory_utilization=0.3))
    backend: Any = build_backend(settings)
    assert isinstance(backend, VLLMBackend)
    await backend.start()
    try:
        # The engine renders a training row's prompt with the exported tokenizer exactly as training did.
        row = read_jsonl(Path(json.loads((lora_run / "aft_train.json").read_text())["data"]))[1]
        trained = AutoTokenizer.from_pretrained(lora_run)
        text = trained.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
        assert await backend.prompt_ids(row["prompt"]) == trained.encode(text, add_special_tokens=False)
        params = PipelineParams(settings.default_proposals, settings.default_rounds,
                                Sampling(settings.proposal_temperature, settings.proposal_top_p, max_tokens=8),
                                Sampling(settings.temperature, settings.top_p, max_tokens=8, seed=1))
        answer, = await Pipeline(backend).run([{"role": "user", "content": "What is 2 plus 3?"}], params)
        assert [len(layer.outputs) for layer in answer.layers] == [3]  # the manifest's N and rounds
        assert answer.usage.requests == 2
    finally:
        await backend.close()


def test_the_early_exit_recommendation_takes_all_or_a_share() -> None:
    from training.export import make_parser

    parser = make_parser()
    assert parser.parse_args(["m", "o", "--early-exit", "all"]).early_exit == 1.0
    assert parser.parse_args(["m", "o", "--early-exit", "0.6"]).early_exit == 0.6
    assert parser.parse_args(["m", "o"]).early_exit is None
    for bad in ("0", "1.5", "most"):
        with pytest.raises(SystemExit):
            parser.parse_args(["m", "o", "--early-exit", bad])
