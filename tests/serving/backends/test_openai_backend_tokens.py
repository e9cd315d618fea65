"""OpenAIBackend.prompt_size against scripted upstreams: vLLM's /tokenize, a local tokenizer, neither."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from serving.backends.base import PromptSize, Tools
from serving.backends.openai_target import Upstream
from serving.errors import InvalidRequest
from serving.format import Message
from tests.serving.backends.scripted_upstreams import Upstreams, recording

MESSAGES: list[Message] = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]


def vllm_like(models: list[dict[str, Any]], tokenize: httpx.Response | None = None) -> Any:
    """An upstream answering /v1/models with `models` and /tokenize with `tokenize` (404 when None)."""
    def reply(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": models})
        if request.url.path == "/tokenize" and tokenize is not None:
            return tokenize
        return httpx.Response(404, json={"detail": "Not Found"})
    return recording(reply)


async def test_vllm_counts_with_its_tokenize_endpoint(ups: Upstreams) -> None:
    seen, handler = vllm_like([{"id": "m"}], httpx.Response(200, json={"count": 17, "max_model_len": 4096,
                                                                        "tokens": list(range(17))}))
    backend = await ups.make(handler)
    assert await backend.prompt_size("proposer", MESSAGES) == PromptSize(17, 4096)
    (asked,) = seen
    assert asked.url.path == "/tokenize"  # at the server's root, beside /v1
    assert json.loads(asked.content) == {"model": "m", "messages": MESSAGES, "add_generation_prompt": True}
    assert asked.headers["authorization"].startswith("Bearer ")


async def test_an_upstream_without_tokenize_counts_nothing_and_says_so_once(
        ups: Upstreams, caplog: pytest.LogCaptureFixture) -> None:
    seen, handler = vllm_like([{"id": "m"}])
    backend = await ups.make(handler)
    with caplog.at_level(logging.WARNING, logger="serving.backends.openai"):
        assert await backend.prompt_size("proposer", MESSAGES) is None
        assert await backend.prompt_size("aggregator", MESSAGES) is None
    assert len(seen) == 1  # not asked again
    assert [r.message for r in caplog.records if "cannot count" in r.message] == [
        f"cannot count prompt tokens for upstream {ups.url}: {ups.url.removesuffix('/v1')}/tokenize answered 404; "
        "name a local tokenizer (--tokenizer) to count tokens; no context budget for it"]


async def test_a_prompt_the_upstream_cannot_template_is_the_clients_error(ups: Upstreams) -> None:
    refusal = httpx.Response(400, json={"error": {"message": "Conversation roles must alternate"}})
    backend = await ups.make(vllm_like([{"id": "m"}], refusal)[1])
    with pytest.raises(InvalidRequest, match="roles must alternate"):
        await backend.prompt_size("proposer", MESSAGES)


async def test_a_local_tokenizer_counts_with_the_declared_context(ups: Upstreams, tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    expected = len(AutoTokenizer.from_pretrained(tiny_model).apply_chat_template(
        MESSAGES, add_generation_prompt=True, tokenize=True, return_dict=False))
    seen, handler = vllm_like([{"id": "other", "max_model_len": 1}, {"id": "m", "max_model_len": 2048}])
    url = await ups.serve(handler)
    backend = await ups.backend(Upstream(url, "m"), tokenizer=str(tiny_model))
    assert await backend.prompt_size("proposer", MESSAGES) == PromptSize(expected, 2048)
    shorter = await backend.prompt_size("proposer", MESSAGES[1:])
    assert shorter is not None and shorter.tokens < expected
    assert [r.url.path for r in seen] == ["/v1/models"]  # the context asked once, /tokenize never


async def test_a_local_tokenizer_without_a_declared_context_counts_nothing(ups: Upstreams, tiny_model: Path,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    backend = await ups.make(vllm_like([{"id": "m"}])[1], tokenizer=str(tiny_model))
    with caplog.at_level(logging.WARNING, logger="serving.backends.openai"):
        assert await backend.prompt_size("proposer", MESSAGES) is None
        assert await backend.prompt_size("proposer", MESSAGES) is None
    assert len([r for r in caplog.records if "declares no max_model_len" in r.message]) == 1


async def test_tool_definitions_are_counted_with_the_prompt(ups: Upstreams) -> None:
    seen, handler = vllm_like([{"id": "m"}], httpx.Response(200, json={"count": 90, "max_model_len": 4096}))
    backend = await ups.make(handler)
    tools = Tools(({"type": "function", "function": {"name": "get_time"}},), "none")
    assert await backend.prompt_size("proposer", MESSAGES, tools) == PromptSize(90, 4096)
    assert json.loads(seen[-1].content)["tools"] == list(tools.definitions)


async def test_the_model_context_is_the_aggregators_upstreams_declared_one(ups: Upstreams) -> None:
    """What /v1/models reports as max_model_len: the aggregator upstream's declared context, asked
    once; None where it declares none or cannot be asked."""
    seen, declared = vllm_like([{"id": "m", "max_model_len": 8192}])
    silent = vllm_like([{"id": "p"}])[1]
    backend = await ups.backend(Upstream(await ups.serve(silent), "p"), Upstream(await ups.serve(declared), "m"))
    assert await backend.model_context() == 8192
    assert await backend.model_context() == 8192 and len(seen) == 1
    assert await (await ups.make(silent, model="p")).model_context() is None
    gone = await ups.backend(Upstream("http://127.0.0.1:9/v1", "m"))
    assert await gone.model_context() is None
