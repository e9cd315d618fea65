"""VLLMBackend's watchdog, on a fake AsyncLLM: a request waiting on an engine that dies ends in
EngineDead at the watchdog's next check, however vLLM left the wait; a caller's own cancellation
stays a cancellation. (The real engine, killed: tests/integration/test_engine_death.py.)"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from serving.backends.base import Sampling
from serving.backends.vllm import VLLMBackend
from serving.backends.vllm_engine import EngineConfig
from serving.errors import EngineDead
from serving.format import Message

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")

MESSAGES: list[Message] = [{"role": "user", "content": "hi"}]
SAMPLING = Sampling(1.0, 1.0, max_tokens=4)


class Tokenizer:
    def apply_chat_template(self, messages: list[dict[str, Any]], **_: Any) -> str:
        return " ".join(m["content"] for m in messages)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [1] * len(text.split())


class UnansweredEngine:
    """Every request waits forever, as the first request of vLLM's AsyncLLM waits on a question its dead
    engine core never answers; check_health fails once `dead`."""

    def __init__(self) -> None:
        self.dead = False
        self.waiting = asyncio.Event()

    def get_tokenizer(self) -> Tokenizer:
        return Tokenizer()

    async def generate(self, *_: Any) -> AsyncGenerator[Any, None]:
        self.waiting.set()
        await asyncio.Event().wait()
        yield  # an async generator, as AsyncLLM.generate is

    async def check_health(self) -> None:
        if self.dead:
            from vllm.v1.engine.exceptions import EngineDeadError
            raise EngineDeadError()


def backend_on(engine: UnansweredEngine) -> VLLMBackend:
    backend = VLLMBackend(EngineConfig(model="unused"))
    backend._engine = engine  # type: ignore[assignment]
    backend._max_model_len = 64
    return backend


async def test_a_request_waiting_on_an_engine_that_dies_ends_in_engine_dead_at_the_next_check() -> None:
    engine = UnansweredEngine()
    backend = backend_on(engine)
    answer = asyncio.ensure_future(backend.generate("proposer", MESSAGES, SAMPLING, n=1))
    stream = asyncio.ensure_future(anext(backend.stream("aggregator", MESSAGES, SAMPLING)))
    await engine.waiting.wait()
    await asyncio.sleep(0.6)  # a check or more of a live engine: nothing ends
    assert not answer.done() and not stream.done()
    engine.dead = True
    for waiting in (answer, stream):
        with pytest.raises(EngineDead) as dead:
            await asyncio.wait_for(waiting, 2)
        assert dead.value.code == "engine_dead"
    assert backend._in_flight == set() and backend._waiting == {} and backend._woken == set()


async def test_a_caller_cancelling_its_request_is_not_told_the_engine_died() -> None:
    engine = UnansweredEngine()
    backend = backend_on(engine)
    answer = asyncio.ensure_future(backend.generate("proposer", MESSAGES, SAMPLING, n=1))
    await engine.waiting.wait()
    answer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await answer
    assert backend._in_flight == set() and backend._waiting == {}


async def test_the_watchdog_stops_when_no_request_is_in_flight() -> None:
    engine = UnansweredEngine()
    backend = backend_on(engine)
    answer = asyncio.ensure_future(backend.generate("proposer", MESSAGES, SAMPLING, n=1))
    await engine.waiting.wait()
    answer.cancel()
    await asyncio.gather(answer, return_exceptions=True)
    assert backend._watchdog is not None
    await asyncio.wait_for(backend._watchdog, 2)  # ends at its next check


