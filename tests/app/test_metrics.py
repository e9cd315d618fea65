"""/metrics after real requests (the app over a scripted backend): each family moves by what the
requests did."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from serving.errors import EngineDead, UpstreamRateLimited, UpstreamTimeout
from tests.app.conftest import GatedBackend
from tests.fakes import chat_body
from tests.serving.test_budget import filling

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class RetryingBackend(GatedBackend):
    """Reports retries as the OpenAI backend does (`retried`, by kind)."""

    retried: Counter[str] = field(default_factory=Counter)


async def scrape(client: httpx.AsyncClient) -> Samples:
    text = (await client.get("/metrics")).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in after, f"/metrics has no {name}{labels}"
    return after[key] - before.get(key, 0.0)


@pytest.fixture
def backend() -> RetryingBackend:
    return RetryingBackend()


async def test_each_family_moves_by_what_the_requests_did(client: httpx.AsyncClient,
                                                          backend: RetryingBackend) -> None:
    before = await scrape(client)
    body = chat_body(aft={"proposals": 3, "rounds": 3})  # proposals, 2 aggregation rounds, final
    assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
    assert (await client.post("/v1/chat/completions", json={**body, "stream": True, "n": 2})).status_code == 200
    # Three answers: the stage histograms count one sample per round of each.
    after = await scrape(client)
    assert moved(before, after, "aft_requests_total", stream="false", status="200") == 1
    assert moved(before, after, "aft_requests_total", stream="true", status="200") == 1
    assert moved(before, after, "aft_stage_duration_seconds_count", stage="proposals") == 3
    assert moved(before, after, "aft_stage_duration_seconds_count", stage="aggregation") == 6
    assert moved(before, after, "aft_stage_duration_seconds_count", stage="final") == 3
    assert moved(before, after, "aft_stage_duration_seconds_sum", stage="final") >= 0
    assert moved(before, after, "aft_backend_requests_total", stage="aggregation") == 6
    completions = [sum(len(backend.reply(c, i).split()) for i in range(c.n)) for c in backend.calls]
    assert moved(before, after, "aft_tokens_total", stage="proposals", kind="completion") == sum(
        n for n, c in zip(completions, backend.calls, strict=True) if c.role == "proposer")
    for kind in ("engine_dead", "upstream_unavailable", "upstream_timeout", "upstream_rate_limited"):
        assert moved(before, after, "aft_backend_errors_total", kind=kind) == 0

    backend.retried.update({"status": 2, "connect": 1})
    for error, stream in ((UpstreamTimeout("slow"), False), (UpstreamTimeout("slow"), True),
                          (UpstreamRateLimited("busy"), False), (EngineDead("gone"), False)):
        backend.error, backend.fail_on_call = error, len(backend.calls) + 1
        await client.post("/v1/chat/completions", json={**body, "stream": stream})
    backend.error = None
    before, after = after, await scrape(client)
    assert moved(before, after, "aft_backend_errors_total", kind="upstream_timeout") == 2
    assert moved(before, after, "aft_backend_errors_total", kind="upstream_rate_limited") == 1
    assert moved(before, after, "aft_backend_errors_total", kind="engine_dead") == 1
    assert moved(before, after, "aft_requests_total", stream="true", status="504") == 1
    assert moved(before, after, "aft_upstream_retries_total", kind="status") == 2
    assert moved(before, after, "aft_upstream_retries_total", kind="connect") == 1
    assert moved(before, after, "aft_upstream_retries_total", kind="disconnected") == 0
    assert moved(before, after, "aft_stage_duration_seconds_count", stage="final") == 0


async def test_context_trims_are_counted(client: httpx.AsyncClient, backend: GatedBackend) -> None:
    before = await scrape(client)
    # Drafts fill their room; each "~" takes one token more in a prompt than it was generated as.
    backend.context_length = 2048
    backend.count_tokens = lambda text: len(text.split()) + text.count("~")
    backend.reply = filling(backend, "~")
    body = chat_body(max_tokens=16, aft={"proposals": 3, "rounds": 2})
    answer = (await client.post("/v1/chat/completions", json=body)).json()["aft"]["answers"][0]
    after = await scrape(client)
    assert moved(before, after, "aft_drafts_capped_total") == 1 == int(answer["drafts_capped_to"] is not None)
    assert moved(before, after, "aft_drafts_trimmed_total") == answer["drafts_trimmed"] > 0


async def test_requests_in_flight_counts_the_requests_being_served(client: httpx.AsyncClient,
                                                                   backend: GatedBackend) -> None:
    backend.held = True  # drafts wait for `go`
    answers = [asyncio.ensure_future(client.post("/v1/chat/completions", json=chat_body(stream=stream)))
               for stream in (False, True)]
    while len(backend.calls) < 2:
        await asyncio.sleep(0)
    assert (await scrape(client))[("aft_requests_in_flight", frozenset())] == 2
    backend.go.set()
    assert [(await a).status_code for a in answers] == [200, 200]
    assert (await scrape(client))[("aft_requests_in_flight", frozenset())] == 0


def test_every_family_is_documented(app_factory: Callable[..., FastAPI]) -> None:
    documented = (Path(__file__).parents[2] / "docs" / "api.md").read_text(encoding="utf-8")
    families = list(app_factory().state.metrics.registry.collect())
    assert len(families) >= 11
    for family in families:
        exposed = family.name + "_total" if family.type == "counter" else family.name
        assert f"`{exposed}`" in documented, f"docs/api.md does not list {exposed}"
