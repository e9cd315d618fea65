"""VLLMBackend on a real AsyncLLM serving the tiny random model (CPU build of vLLM; slow: ~1 min).

The engine is started once for the module, so the fixture and the tests share one event
loop (loop_scope="module"). Sampled texts are nonsense but reproducible: tests that need
a given finish use a fixed seed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from serving.backends.base import Sampling
from serving.backends.vllm import VLLMBackend
from serving.backends.vllm_engine import EngineConfig
from serving.errors import BackendError, ContextLengthExceeded, InvalidRequest
from serving.format import Message
from training.tiny import build_tiny_model

pytestmark = [
    pytest.mark.integration,
    pytest.mark.asyncio(loop_scope="module"),
    # find_spec, not importorskip: importing vllm costs seconds even when these tests are deselected.
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed"),
]

MAX_LEN = 512
MESSAGES: list[Message] = [{"role": "system", "content": "\n"}, {"role": "user", "content": "hello world"}]


def _add_bos_post_processor(tokenizer_json: Path) -> None:
    # Like Llama 3: the tokenizer itself prepends BOS, and so does the chat template.
    # Without this the no-doubled-BOS test could not fail.
    data = json.loads(tokenizer_json.read_text())
    bos = {"SpecialToken": {"id": "<|bos|>", "type_id": 0}}
    data["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<|bos|>": {"id": "<|bos|>", "ids": [0], "tokens": ["<|bos|>"]}},
    }
    tokenizer_json.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    _add_bos_post_processor(path / "tokenizer.json")
    return path


@pytest.fixture(scope="module")
def cpu_env() -> Iterator[None]:
    # The CPU build refuses to start without a KV cache size; the library leaves it to deployment.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
        yield


def _config(model_dir: Path) -> EngineConfig:
    return EngineConfig(model=str(model_dir), max_model_len=MAX_LEN, gpu_memory_utilization=0.3, dtype="float32")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def backend(model_dir: Path, cpu_env: None) -> AsyncIterator[VLLMBackend]:
    backend = VLLMBackend(_config(model_dir))
    await backend.start()
    yield backend
    await backend.close()


def sampling(**overrides: Any) -> Sampling:
    return Sampling(**{"temperature": 1.0, "top_p": 1.0, "max_tokens": 8, "seed": 1, **overrides})


async def messages_of_length(backend: VLLMBackend, tokens: int) -> list[Message]:
    """A conversation whose rendered prompt is exactly `tokens` long."""
    words = tokens
    for _ in range(50):
        messages: list[Message] = [{"role": "user", "content": "hello" + " hello" * words}]
        length = len(await backend.prompt_ids(messages))
        if length == tokens:
            return messages
        words += tokens - length
    raise AssertionError(f"cannot build a prompt of {tokens} tokens")


async def wait_idle(backend: VLLMBackend, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while backend.num_unfinished_requests() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return backend.num_unfinished_requests()


async def test_max_model_len_and_health(backend: VLLMBackend) -> None:
    assert backend.max_model_len == MAX_LEN
    await backend.check_health()
    assert backend.num_unfinished_requests() == 0


async def test_chat_template_bos_not_doubled(backend: VLLMBackend) -> None:
    tokenizer = backend.engine.get_tokenizer()
    bos = tokenizer.bos_token_id
    assert tokenizer.encode("hello")[0] == bos  # the tokenizer does add BOS on its own
    ids = await backend.prompt_ids(MESSAGES)
    assert ids[0] == bos and ids.count(bos) == 1
    assert tokenizer.decode(ids).startswith("<|bos|><|system|>")
    assert tokenizer.decode(ids).endswith("<|assistant|>\n")


async def test_generate_n_samples_in_one_request(backend: VLLMBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = backend.engine.generate

    def counting(prompt: Any, params: Any, request_id: str, **kwargs: Any) -> Any:
        calls.append(params.n)
        return original(prompt, params, request_id, **kwargs)

    monkeypatch.setattr(backend.engine, "generate", counting)
    generation = await backend.generate("proposer", MESSAGES, sampling(max_tokens=6, seed=3), n=5)
    assert calls == [5]
    assert len(generation.completions) == 5
    assert len({c.text for c in generation.completions}) > 1
    assert [c.finish_reason for c in generation.completions] == ["length"] * 5  # seed 3 hits no EOS
    usage = generation.usage
    assert usage.prompt_tokens == len(await backend.prompt_ids(MESSAGES))
    assert usage.completion_tokens == 5 * 6
    assert usage.requests == 1


async def test_seed_reproducible(backend: VLLMBackend) -> None:
    first = await backend.generate("proposer", MESSAGES, sampling(seed=7), n=3)
    again = await backend.generate("aggregator", MESSAGES, sampling(seed=7), n=3)
    other = await backend.generate("proposer", MESSAGES, sampling(seed=8), n=3)
    assert [c.text for c in first.completions] == [c.text for c in again.completions]
    assert [c.text for c in first.completions] != [c.text for c in other.completions]


async def test_stop_string(backend: VLLMBackend) -> None:
    free = (await backend.generate("proposer", MESSAGES, sampling(max_tokens=24, seed=5), n=1)).completions[0]
    word = re.search(r"[a-z]{2,}", free.text[1:])
    assert word, free.text
    stop = word.group()
    stopped = await backend.generate("proposer", MESSAGES, sampling(max_tokens=24, seed=5, stop=(stop,)), n=1)
    assert stopped.completions[0].text == free.text[:free.text.index(stop)]
    assert stopped.completions[0].finish_reason == "stop"


async def test_max_tokens_clamped_to_context(backend: VLLMBackend) -> None:
    messages = await messages_of_length(backend, MAX_LEN - 4)
    for max_tokens in (1000, None):
        generation = await backend.generate("proposer", messages, sampling(max_tokens=max_tokens), n=2)
        assert [c.finish_reason for c in generation.completions] == ["length", "length"]
        assert generation.usage.prompt_tokens == MAX_LEN - 4
        assert generation.usage.completion_tokens == 2 * 4


async def test_prompt_too_long(backend: VLLMBackend) -> None:
    for length in (MAX_LEN, MAX_LEN + 7):
        messages = await messages_of_length(backend, length)
        with pytest.raises(ContextLengthExceeded, match=rf"{length}.*{MAX_LEN}"):
            await backend.generate("proposer", messages, sampling(), n=1)
        with pytest.raises(ContextLengthExceeded):
            [d async for d in backend.stream("proposer", messages, sampling())]
    assert backend.num_unfinished_requests() == 0


async def test_prompt_size_counts_what_the_engine_is_given(backend: VLLMBackend) -> None:
    size = await backend.prompt_size("aggregator", MESSAGES)
    assert size.tokens == len(await backend.prompt_ids(MESSAGES)) and size.context_length == MAX_LEN
    generation = await backend.generate("aggregator", MESSAGES, sampling(max_tokens=2), n=1)
    assert generation.usage.prompt_tokens == size.tokens


async def test_a_counted_prompt_is_not_tokenized_again(backend: VLLMBackend,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    rendered: list[list[Message]] = []
    render = backend._render

    def counting(messages: list[Message]) -> list[int]:
        rendered.append(messages)
        return render(messages)

    monkeypatch.setattr(backend, "_render", counting)
    messages: list[Message] = [*MESSAGES, {"role": "user", "content": "counted once"}]
    size = await backend.prompt_size("proposer", messages)
    generation = await backend.generate("proposer", messages, sampling(max_tokens=2), n=1)
    assert len(rendered) == 1 and generation.usage.prompt_tokens == size.tokens
    deltas = [d async for d in backend.stream("proposer", messages, sampling(max_tokens=2))]
    assert len(rendered) == 2  # taken by the request that sent it: the next one tokenizes again
    assert deltas[-1].usage is not None and deltas[-1].usage.prompt_tokens == size.tokens


async def test_invalid_sampling(backend: VLLMBackend) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await backend.generate("proposer", MESSAGES, sampling(temperature=-1.0), n=1)
    assert caught.value.param == "temperature"


async def test_stream(backend: VLLMBackend) -> None:
    deltas = [d async for d in backend.stream("proposer", MESSAGES, sampling(max_tokens=12, seed=3))]
    assert len(deltas) > 2
    assert all(d.text for d in deltas[:-1])
    assert all(d.finish_reason is None and d.usage is None for d in deltas[:-1])
    last = deltas[-1]
    assert last.finish_reason == "length" and last.usage is not None
    assert last.usage.prompt_tokens == len(await backend.prompt_ids(MESSAGES))
    assert last.usage.completion_tokens == 12 and last.usage.requests == 1
    whole = await backend.generate("proposer", MESSAGES, sampling(max_tokens=12, seed=3), n=1)
    assert "".join(d.text for d in deltas) == whole.completions[0].text


async def test_closing_stream_aborts(backend: VLLMBackend) -> None:
    stream = backend.stream("proposer", MESSAGES, sampling(max_tokens=None, seed=3))
    for _ in range(3):
        await anext(stream)
    assert backend.num_unfinished_requests() == 1
    await stream.aclose()
    assert await wait_idle(backend) == 0


async def test_cancelling_stream_consumer_aborts(backend: VLLMBackend) -> None:
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in backend.stream("proposer", MESSAGES, sampling(max_tokens=None, seed=3)):
            started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_idle(backend) == 0


async def test_cancelling_generate_aborts(backend: VLLMBackend) -> None:
    task = asyncio.create_task(backend.generate("proposer", MESSAGES, sampling(max_tokens=None, seed=3), n=4))
    deadline = time.monotonic() + 10
    while backend.num_unfinished_requests() < 4 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert backend.num_unfinished_requests() == 4  # n samples count as n sequences
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_idle(backend) == 0


async def test_close_fails_in_flight_requests(model_dir: Path, cpu_env: None) -> None:
    backend = VLLMBackend(_config(model_dir))
    await backend.start()
    try:
        task = asyncio.create_task(backend.generate("proposer", MESSAGES, sampling(max_tokens=None), n=2))
        deadline = time.monotonic() + 10
        while backend.num_unfinished_requests() < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        await backend.close()
    with pytest.raises(BackendError):
        await asyncio.wait_for(task, 10)
    with pytest.raises(BackendError):
        await backend.generate("proposer", MESSAGES, sampling(), n=1)
    with pytest.raises(BackendError):
        await backend.check_health()
