"""Subset aggregation end to end: `aft serve --backend vllm` on the tiny model, driven by the OpenAI
SDK. With K < N an intermediate round is N engine requests of one sample, each on its own prompt,
counted from vLLM's own metrics (vllm:request_params_n counts one per request)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from scripts.launch import CPU_ENGINE_ENV, CPU_ENGINE_FLAGS, aft_serve_command, free_port, running
from tests.prometheus_text import metric_sum

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def port(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    command = aft_serve_command(port, "--backend", "vllm", "--model", str(tiny_model),
                                "--served-model-name", "aft", *CPU_ENGINE_FLAGS)
    log = tmp_path_factory.mktemp("aft-subset") / "server.log"
    with running(command, f"http://127.0.0.1:{port}/health", log, env=CPU_ENGINE_ENV):
        yield port


def engine_requests(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return metric_sum(text, "vllm:request_params_n_count")


def test_each_aggregation_of_a_subset_round_is_its_own_engine_request(port: int) -> None:
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="test", max_retries=0)
    before = engine_requests(port)
    completion = client.chat.completions.create(
        model="aft", messages=[{"role": "user", "content": "What is 17 + 25?"}], max_tokens=8,
        extra_body={"aft": {"proposals": 4, "rounds": 2, "subset": 2, "proposal_max_tokens": 8,
                            "include_proposals": True}})
    assert isinstance(completion.choices[0].message.content, str)
    # Proposals (one request, n = 4), four aggregations of two drafts each, the final answer.
    assert engine_requests(port) - before == 6
    aft = completion.model_extra["aft"]
    assert aft["subset"] == 2
    [answer] = aft["answers"]
    assert [r["requests"] for r in answer["usage_by_round"]] == [1, 4, 1]
    assert [len(layer["outputs"]) for layer in answer["layers"]] == [4, 4]
