"""The conversation-first format end to end: `aft serve --aggregation-format conversation-first` on the
tiny model and the real engine, beside the same service in the paper's format. Counted from vLLM's
own prefix-cache metrics: in the conversation-first format the aggregation round finds the
conversation in the cache the proposals left; in the paper's it prefills the conversation again."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from scripts.launch import CPU_ENGINE_ENV, CPU_ENGINE_FLAGS, aft_serve_command, free_port, running
from tests.prometheus_text import metric_sum

pytestmark = pytest.mark.integration

SESSIONS = itertools.count()


def serve(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory, fmt: str) -> Iterator[int]:
    port = free_port()
    command = aft_serve_command(port, "--backend", "vllm", "--model", str(tiny_model), "--served-model-name",
                                "aft", "--aggregation-format", fmt, *CPU_ENGINE_FLAGS)
    log = tmp_path_factory.mktemp(f"aft-{fmt}") / "server.log"
    with running(command, f"http://127.0.0.1:{port}/health", log, env=CPU_ENGINE_ENV):
        yield port


@pytest.fixture(scope="module")
def paper(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    yield from serve(tiny_model, tmp_path_factory, "paper")


@pytest.fixture(scope="module")
def conversation_first(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    yield from serve(tiny_model, tmp_path_factory, "conversation-first")


def cache(port: int) -> dict[str, float]:
    """vLLM's prefix-cache counters on the service's /metrics: tokens looked up, and found."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {"queries": metric_sum(text, "vllm:prefix_cache_queries_total"),
            "hits": metric_sum(text, "vllm:prefix_cache_hits_total")}


def answer_hits(port: int) -> tuple[float, int]:
    """One answer (one draft, one round: two engine requests of one sample) to a long conversation no
    request has sent before: the prompt tokens its requests found in the prefix cache, and the
    proposer prompt's length (the conversation) in tokens."""
    session = next(SESSIONS)
    notes = " ".join(f"Day {day}: we walked to the harbour and counted {day * 7} boats." for day in range(40))
    messages = [{"role": "user", "content": f"Session {port}-{session}. My notes: {notes}"},
                {"role": "assistant", "content": "Noted."}, {"role": "user", "content": "How many boats on day 3?"}]
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="test", max_retries=0)
    before = cache(port)
    client.chat.completions.create(model="aft", messages=messages, max_tokens=4,  # type: ignore[arg-type]
                                   extra_body={"aft": {"proposals": 1, "rounds": 1, "proposal_max_tokens": 4}})
    hits = cache(port)["hits"] - before["hits"]
    plain = client.chat.completions.create(model="aft", messages=messages, max_tokens=1,  # type: ignore[arg-type]
                                           extra_body={"aft": {"rounds": 0}})
    assert plain.usage is not None
    return hits, plain.usage.prompt_tokens


def test_conversation_first_aggregations_reuse_the_conversations_cache(paper: int, conversation_first: int) -> None:
    first, tokens = answer_hits(conversation_first)
    again, _ = answer_hits(paper)
    assert tokens > 600
    # The aggregation prompt finds the proposer prompt's blocks (all but its last, partial one) ...
    assert first >= tokens - 2 * 128
    # ... where the paper's layout, drafts first, finds next to nothing of it.
    assert again < tokens / 4
