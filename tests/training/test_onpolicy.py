"""On-policy building: N proposals a query from the service's Backend (a scripted one here)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from serving.backends.base import Generation, Role, Sampling
from serving.errors import BackendError, ContextLengthExceeded
from serving.format import Message, aggregator_messages, proposer_messages
from tests.fakes import Call, ScriptedBackend
from training.data import DataError, on_policy_examples, on_policy_samples

SAMPLING = Sampling(temperature=0.7, top_p=0.95, max_tokens=64)
ROWS = [{"prompt": f"question {i}", "reference": f"answer {i}"} for i in range(10)]


def draft(call: Call, i: int) -> str:
    return f"draft {i} of {call.messages[-1]['content']}"


class CountingBackend(ScriptedBackend):
    """Records the most requests in flight at once."""

    in_flight: int = 0
    most: int = 0

    async def generate(self, role: Role, messages: Sequence[Message], sampling: Sampling, n: int) -> Generation:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            return await super().generate(role, messages, sampling, n)
        finally:
            self.in_flight -= 1


async def test_one_proposer_request_with_n_per_query() -> None:
    backend = ScriptedBackend(reply=draft)
    examples = await on_policy_examples(backend, ROWS, 4, SAMPLING)
    assert len(backend.calls) == len(ROWS)
    assert {(c.role, c.n, c.sampling) for c in backend.calls} == {("proposer", 4, SAMPLING)}
    assert sorted(c.messages[-1]["content"] for c in backend.calls) == sorted(r["prompt"] for r in ROWS)
    assert backend.calls[0].messages == proposer_messages([{"role": "user", "content": "question 0"}])
    # Rows keep the input order even though requests finish in any order.
    for i, example in enumerate(examples):
        conversation: list[Message] = [{"role": "user", "content": f"question {i}"}]
        drafts = [f"draft {k} of question {i}" for k in range(4)]
        assert example["prompt"] == aggregator_messages(conversation, drafts)
        assert example["completion"] == [{"role": "assistant", "content": f"answer {i}"}]


async def test_requests_run_concurrently_within_the_bound() -> None:
    backend = CountingBackend(reply=draft, delay=0.02)
    progress: list[int] = []
    samples = await on_policy_samples(backend, ROWS, 2, SAMPLING, concurrency=3, progress=lambda: progress.append(1))
    assert backend.most == 3 and len(samples) == len(ROWS) == len(progress)


async def test_refused_queries_are_skipped_other_errors_stop_the_build() -> None:
    backend = ScriptedBackend(reply=draft, fail_on_call=2, error=ContextLengthExceeded("too long"))
    samples = await on_policy_samples(backend, ROWS[:3], 2, SAMPLING, concurrency=1)
    assert [s.target for s in samples] == ["answer 0", "answer 2"]

    failing = ScriptedBackend(reply=draft, fail_on_call=2, error=BackendError("engine died"), delay=0.01)
    with pytest.raises(BackendError, match="engine died"):
        await on_policy_samples(failing, ROWS, 2, SAMPLING, concurrency=4)
    assert failing.cancelled > 0  # the other in-flight requests were cancelled (and awaited), not left running


async def test_bad_rows_and_options_are_refused_before_any_request() -> None:
    backend = ScriptedBackend()
    with pytest.raises(DataError, match='line 2: missing reference answer "reference"'):
        await on_policy_samples(backend, [ROWS[0], {"prompt": "q"}], 2, SAMPLING)
    with pytest.raises(ValueError, match="greedy"):
        await on_policy_samples(backend, ROWS, 2, Sampling(temperature=0.0, top_p=1.0))
    assert await on_policy_samples(backend, [{"instruction": "q", "gold": "a"}], 1, SAMPLING, reference="gold")
    assert len(backend.calls) == 1
