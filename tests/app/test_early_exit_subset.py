"""aft.early_exit and aft.subset over HTTP: request options and the server default resolve to the
pipeline's, the response's `aft` says where an answer exited early and how many drafts each
aggregation read, /metrics counts early exits by round, and bad values are 400s naming the field."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.app.conftest import GatedBackend
from tests.app.test_metrics import moved, scrape
from tests.fakes import Call, chat_body

URL = "/v1/chat/completions"


def agreeing(call: Call, i: int) -> str:
    return " four\n" if call.role == "proposer" else "the aggregated answer"


@pytest.fixture
def backend() -> GatedBackend:
    return GatedBackend(reply=agreeing)


def shape(backend: GatedBackend) -> list[tuple[str, int]]:
    return [(c.role, c.n) for c in backend.calls]


async def test_early_exit_in_the_response_and_metrics(client: httpx.AsyncClient, backend: GatedBackend) -> None:
    before = await scrape(client)
    response = await client.post(URL, json=chat_body(aft={"proposals": 3, "rounds": 2, "early_exit": "all"}))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["message"]["content"] == " four\n"
    assert body["choices"][0]["finish_reason"] == "stop"
    [answer] = body["aft"]["answers"]
    assert answer["early_exit_round"] == 0 and len(answer["usage_by_round"]) == 1
    assert body["aft"]["subset"] == 3
    assert shape(backend) == [("proposer", 3)]
    after = await scrape(client)
    assert moved(before, after, "aft_early_exits_total", round="0") == 1
    assert moved(before, after, "aft_stage_duration_seconds_count", stage="final") == 0


async def test_streamed_early_exit_says_so_in_the_usage_chunk(client: httpx.AsyncClient) -> None:
    before = await scrape(client)
    body = chat_body(stream=True, n=2, stream_options={"include_usage": True},
                     aft={"proposals": 3, "rounds": 2, "early_exit": 0.5, "subset": 2})
    response = await client.post(URL, json=body)
    assert response.status_code == 200
    events = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    for index in (0, 1):
        deltas = [c["choices"][0]["delta"].get("content", "") for c in chunks
                  if c["choices"] and c["choices"][0]["index"] == index]
        assert "".join(deltas) == " four\n"
    assert sorted(c["choices"][0]["finish_reason"] for c in chunks
                  if c["choices"] and c["choices"][0]["finish_reason"]) == ["stop", "stop"]
    aft = chunks[-1]["aft"]
    assert aft["subset"] == 2
    assert [a["early_exit_round"] for a in aft["answers"]] == [0, 0]
    assert moved(before, await scrape(client), "aft_early_exits_total", round="0") == 2


async def test_without_early_exit_the_round_is_null(client: httpx.AsyncClient) -> None:
    body = (await client.post(URL, json=chat_body(aft={"proposals": 3, "rounds": 1}))).json()
    assert body["choices"][0]["message"]["content"] == "the aggregated answer"
    assert "early_exit_round" not in body["aft"]["answers"][0]  # null fields are left out, as elsewhere


@pytest.mark.parametrize(("option", "exits"), [(None, True), ({"early_exit": None}, False),
                                               ({"early_exit": False}, False), ({"early_exit": 1}, True),
                                               ({"early_exit": True}, True)])
async def test_the_server_default_and_a_request_that_turns_it_off(
        app_factory: Callable[..., FastAPI], backend: GatedBackend, option: dict[str, Any] | None,
        exits: bool) -> None:
    transport = httpx.ASGITransport(app=app_factory(early_exit=1.0))
    async with httpx.AsyncClient(transport=transport, base_url="http://aft.test") as client:
        body = (await client.post(URL, json=chat_body(aft={"proposals": 3, "rounds": 1, **(option or {})}))).json()
    assert (body["aft"]["answers"][0].get("early_exit_round") == 0) is exits
    assert len(backend.calls) == (1 if exits else 2)


async def test_issue_22_early_exit_true_means_all(app_factory: Callable[..., FastAPI], backend: GatedBackend) -> None:
    # `true` was a 400 although `false` is accepted and means off.
    backend.reply = lambda call, i: "four" if call.role == "proposer" or i < 2 else "five"
    transport = httpx.ASGITransport(app=app_factory())
    async with httpx.AsyncClient(transport=transport, base_url="http://aft.test") as client:
        agreeing = await client.post(URL, json=chat_body(aft={"proposals": 3, "rounds": 2, "early_exit": True}))
        assert agreeing.status_code == 200, agreeing.text
        assert agreeing.json()["aft"]["answers"][0]["early_exit_round"] == 0
        # "all": two of three agreeing drafts are not enough.
        backend.reply = lambda call, i: "four" if i < 2 else "five"
        split = (await client.post(URL, json=chat_body(aft={"proposals": 3, "rounds": 1, "early_exit": True}))).json()
    assert "early_exit_round" not in split["aft"]["answers"][0]


async def test_subset_reads_k_drafts_per_aggregation(client: httpx.AsyncClient, backend: GatedBackend) -> None:
    backend.reply = lambda call, i: f"draft {i}" if call.role == "proposer" else "aggregated"
    body = chat_body(seed=3, aft={"proposals": 4, "rounds": 2, "subset": 2})
    response = await client.post(URL, json=body)
    assert response.status_code == 200, response.text
    assert response.json()["aft"]["subset"] == 2
    assert shape(backend) == [("proposer", 4)] + [("aggregator", 1)] * 5


@pytest.mark.parametrize(("aft", "param"), [
    ({"early_exit": 0}, "aft.early_exit"), ({"early_exit": 1.5}, "aft.early_exit"),
    ({"early_exit": "most"}, "aft.early_exit"),
    ({"early_exit": "0.5"}, "aft.early_exit"),
    ({"subset": 0}, "aft.subset"), ({"subset": 1.5}, "aft.subset"), ({"subset": 17}, "aft.subset"),
])
async def test_bad_values_are_refused_naming_the_field(client: httpx.AsyncClient, backend: GatedBackend,
                                                       aft: dict[str, Any], param: str) -> None:
    response = await client.post(URL, json=chat_body(aft=aft))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert param in error["message"]
    assert backend.calls == []
