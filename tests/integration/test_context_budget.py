"""The context budget end to end (issue 11, point 1): `aft serve --backend vllm` on the tiny model
with a 2,048-token context, driven by the OpenAI SDK. Drafts allowed the whole context once
overflowed the aggregation prompt (a 400 for a client that did nothing wrong); now they are
capped to fit, and a conversation that leaves no room for drafts is refused before the engine
runs. Engine requests are counted from vLLM's own metrics (vllm:request_params_n counts one per
request), which the service exposes for its in-process engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from scripts.launch import CPU_ENGINE_ENV, CPU_ENGINE_FLAGS, aft_serve_command, free_port, running
from tests.prometheus_text import metric_sum

pytestmark = pytest.mark.integration

FOX = [{"role": "user", "content": "the quick brown fox"}]


class Service:
    def __init__(self, port: int) -> None:
        self.metrics_url = f"http://127.0.0.1:{port}/metrics"
        self.client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="test", max_retries=0)

    def engine_requests(self) -> float:
        text = httpx.get(self.metrics_url, timeout=10).text
        return metric_sum(text, "vllm:request_params_n_count")


@pytest.fixture(scope="module")
def service(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    assert "2048" in CPU_ENGINE_FLAGS  # the context of the issue's reproduction
    port = free_port()
    command = aft_serve_command(port, "--backend", "vllm", "--model", str(tiny_model),
                                "--served-model-name", "aft", *CPU_ENGINE_FLAGS)
    log = tmp_path_factory.mktemp("aft-budget") / "server.log"
    with running(command, f"http://127.0.0.1:{port}/health", log, env=CPU_ENGINE_ENV):
        yield Service(port)


def test_issue_11_drafts_are_capped_to_fit_the_context(service: Service) -> None:
    before = service.engine_requests()
    completion = service.client.chat.completions.create(
        model="aft", messages=FOX, max_tokens=16,  # type: ignore[arg-type]
        extra_body={"aft": {"proposals": 3, "rounds": 2, "include_proposals": True}})
    assert isinstance(completion.choices[0].message.content, str)
    assert service.engine_requests() - before == 3
    answer = completion.model_extra["aft"]["answers"][0]
    # Three drafts and a draft's length (an intermediate round) fit beside the prompt.
    assert 32 <= answer["drafts_capped_to"] < 2048 // 4
    assert answer["drafts_trimmed"] >= 0
    proposals = answer["usage_by_round"][0]
    assert proposals["completion_tokens"] <= 3 * answer["drafts_capped_to"]


def test_streamed_answer_reports_the_cap(service: Service) -> None:
    stream = service.client.chat.completions.create(
        model="aft", messages=FOX, max_tokens=16, stream=True, stream_options={"include_usage": True},  # type: ignore[arg-type]
        extra_body={"aft": {"proposals": 3, "rounds": 2}})
    chunks = list(stream)
    assert chunks[-1].usage is not None
    [answer] = chunks[-1].model_extra["aft"]["answers"]
    assert 32 <= answer["drafts_capped_to"] < 2048 // 4


@pytest.mark.parametrize("stream", [False, True])
def test_no_room_for_drafts_is_refused_before_the_engine_runs(service: Service, stream: bool) -> None:
    # The proposer prompt fits (about 1,800 tokens); three drafts beside it in the aggregation do not.
    long = [{"role": "user", "content": "seven " * 1800}]
    before = service.engine_requests()
    with pytest.raises(openai.BadRequestError) as refused:
        service.client.chat.completions.create(
            model="aft", messages=long, max_tokens=16, stream=stream,  # type: ignore[call-overload]
            extra_body={"aft": {"proposals": 3, "rounds": 2}})
    assert refused.value.code == "context_length_exceeded"
    assert "2048" in refused.value.message and "3 drafts" in refused.value.message
    assert service.engine_requests() == before
