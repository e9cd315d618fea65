"""A real chat model through the real service (issue 21): SmolLM2-135M-Instruct, converted by
training/smollm2.py (`make smollm2`, cached in models/), served by `aft serve --model DIR` on the
in-process CPU engine. Its 49,152-token vocabulary, ChatML template and 8,192-token context are
what the tiny random models of the other tests never exercise.

One engine start for the whole module (about three minutes on two cores); every request is kept
short (max_tokens small). The flags beyond `--model` bound the time (N, rounds, draft length) and
turn on tool-call parsing; none touches the context length, dtype or chat template, which come
from the checkpoint as they do with no flags.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from bench.smollm2 import long_conversation
from scripts.launch import aft_serve_command, free_port, running
from tests.app.test_open_webui import CHAT_PAGE
from tests.tool_upstream import WEATHER_TOOL
from training.smollm2 import DEFAULT_OUT, DOWNLOADS, build_smollm2

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MODEL = "smollm2"
CONTEXT = 8192
DRAFT_TOKENS = 24
"""Each draft's limit (--proposal-max-tokens): enough for a sentence, short enough to keep the module quick."""
FRANCE: list[Any] = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
AFT: dict[str, Any] = {"aft": {"proposals": 3, "rounds": 1, "include_proposals": True}}


@pytest.fixture(scope="module")
def smollm2() -> Path:
    """The converted checkpoint, built as `make smollm2` builds it when models/ lacks it."""
    return build_smollm2(ROOT / DEFAULT_OUT, downloads=ROOT / DOWNLOADS)


@pytest.fixture(scope="module")
def service(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    command = aft_serve_command(port, "--model", str(smollm2), "--served-model-name", MODEL,
                                "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
                                "--default-proposals", "3", "--default-rounds", "1",
                                "--proposal-max-tokens", str(DRAFT_TOKENS), "--max-tokens", "32")
    log = tmp_path_factory.mktemp("aft-smollm2") / "server.log"
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    with running(command, f"http://127.0.0.1:{port}/health", log, env=env, timeout=900):
        yield f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def client(service: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=service, api_key="unused", max_retries=0, timeout=600) as sdk:
        yield sdk


def test_checkpoint_serves_with_its_own_context_and_template(smollm2: Path, client: openai.OpenAI) -> None:
    template = (smollm2 / "chat_template.jinja").read_text()
    assert "<|im_start|>" in template  # ChatML, from the GGUF file
    assert json.loads((smollm2 / "config.json").read_text())["vocab_size"] == 49152
    assert not (smollm2 / "aft.json").exists()  # not aggregation fine-tuned: the service's defaults apply
    # The engine's context is the model's own, listed as `vllm serve` lists it ...
    assert client.models.list().data[0].model_extra["max_model_len"] == CONTEXT  # type: ignore[index]
    # ... and a prompt past it is refused (before the engine runs) naming it.
    with pytest.raises(openai.BadRequestError, match=f"context length is {CONTEXT}"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "seven " * 9000}],
                                       max_tokens=8)


def test_a_real_question_is_answered_from_three_drafts(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=FRANCE, temperature=0, max_tokens=24,
                                                extra_body=AFT)
    answer = completion.choices[0].message.content or ""
    assert "Paris" in answer, answer
    layers = completion.model_extra["aft"]["answers"][0]["layers"]  # type: ignore[index]
    assert [layer["round"] for layer in layers] == [0]
    assert len(layers[0]["outputs"]) == 3 and all(layers[0]["outputs"]), layers
    assert completion.usage is not None and completion.usage.completion_tokens > 0


def test_the_drafts_stream_as_reasoning_before_the_answer(client: openai.OpenAI) -> None:
    order, reasoning, content = [], "", ""
    for chunk in client.chat.completions.create(model=MODEL, messages=FRANCE, temperature=0, max_tokens=24,
                                                stream=True, extra_body={"aft": {**AFT["aft"], "reasoning": True}}):
        for choice in chunk.choices:
            piece = (choice.delta.model_extra or {}).get("reasoning_content") or ""
            reasoning += piece
            content += choice.delta.content or ""
            order += ["reasoning"] * bool(piece) + ["content"] * bool(choice.delta.content)
    assert "### Round 0 · draft 1" in reasoning and "### Round 0 · draft 3" in reasoning, reasoning
    assert "Paris" in content, content
    assert order.index("content") > max(i for i, kind in enumerate(order) if kind == "reasoning")


def test_a_named_tool_call_is_made(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}},  # type: ignore[list-item]
        temperature=0, max_tokens=32, extra_body=AFT)
    choice = completion.choices[0]
    assert choice.message.tool_calls, choice
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    # The arguments were constrained to the tool's schema on the model's own 49k-token vocabulary.
    assert isinstance(json.loads(call.function.arguments)["city"], str)  # type: ignore[union-attr]


CAPITAL_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["city", "country"],
    "properties": {"city": {"type": "string", "maxLength": 40}, "country": {"type": "string", "maxLength": 40}}}


def test_a_json_schema_answer_is_compiled_on_the_real_vocabulary(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL, temperature=0, max_tokens=48, extra_body=AFT,
        messages=[{"role": "user", "content": "What is the capital of France? Reply in JSON with city and country."}],
        response_format={"type": "json_schema", "json_schema": {"name": "capital", "schema": CAPITAL_SCHEMA,
                                                                "strict": True}})
    choice = completion.choices[0]
    assert choice.finish_reason == "stop", choice
    answer = json.loads(choice.message.content or "")
    assert set(answer) == {"city", "country"} and all(isinstance(v, str) for v in answer.values()), answer


def test_a_5000_token_conversation_fits_its_8k_context(client: openai.OpenAI, smollm2: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(smollm2)
    conversation = long_conversation(5000, lambda text: len(tokenizer.encode(text, add_special_tokens=False)))
    completion = client.chat.completions.create(model=MODEL, messages=conversation,  # type: ignore[arg-type]
                                                max_tokens=16, extra_body=AFT)
    assert completion.choices[0].message.content
    answer = completion.model_extra["aft"]["answers"][0]  # type: ignore[index]
    proposals, aggregation = answer["usage_by_round"]
    assert 4900 <= proposals["prompt_tokens"] < CONTEXT, proposals
    # The aggregation prompt holds the conversation and the three drafts, still inside the context.
    assert proposals["prompt_tokens"] < aggregation["prompt_tokens"] < CONTEXT, answer
    # Three drafts of 24 tokens beside 5,000 fit: the context budget (real token counts) cuts nothing.
    assert answer.get("drafts_capped_to") is None and answer["drafts_trimmed"] == 0, answer


def test_open_webui_chat_page_request_is_answered(service: str) -> None:
    # The chat page's request as recorded (30 builtin tools, streamed, usage), no `aft` field:
    # the server's defaults apply.
    body = {**CHAT_PAGE, "model": MODEL}
    with httpx.stream("POST", f"{service}/chat/completions", json=body, timeout=600) as response:
        assert response.status_code == 200, response.read()
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert not any("error" in chunk for chunk in chunks), chunks
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    calls = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("tool_calls")]
    assert text or calls  # tool_choice auto: a text answer or a call of one of its tools
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] in ("stop", "tool_calls", "length")
    assert chunks[-1]["usage"]["total_tokens"] > 0


def test_checkpoint_is_cached_not_rebuilt(smollm2: Path) -> None:
    written = (smollm2 / "model.safetensors").stat().st_mtime_ns
    assert build_smollm2(smollm2, downloads=ROOT / DOWNLOADS) == smollm2
    assert (smollm2 / "model.safetensors").stat().st_mtime_ns == written
    assert os.path.getsize(smollm2 / "model.safetensors") > 200 * 2**20  # dense bf16, not a 4-bit file
