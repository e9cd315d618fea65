"""A scripted in-memory backend for unit tests: records every call, answers deterministically."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from serving.backends.base import Completion, Generation, PromptSize, Role, Sampling, StreamDelta, Tools, Usage
from serving.errors import ContextLengthExceeded
from serving.format import Message

MODEL = "aft-test"


def chat_body(**extra: Any) -> dict[str, Any]:
    """A minimal valid chat request for MODEL, with overrides."""
    return {"model": MODEL, "messages": [{"role": "user", "content": "What is 2+2?"}], **extra}


@dataclass
class Call:
    role: Role
    messages: list[Message]
    sampling: Sampling
    n: int
    stream: bool


def default_reply(call: Call, i: int) -> str:
    return f"{call.role}-{len(call.messages[0]['content'])}-{i}"


def word_count(text: str) -> int:
    return len(text.split())


@dataclass
class ScriptedBackend:
    """Each request costs len(system content) prompt tokens and one completion token per word.

    With `context_length` set the backend counts prompts (`prompt_size`: `count_tokens` of every
    message's content, words by default) and refuses, as an engine does, a prompt that does not
    leave room for one token; `prompt_sizes` counts the calls to `prompt_size`."""

    reply: Callable[[Call, int], str] = default_reply
    context_length: int | None = None
    count_tokens: Callable[[str], int] = word_count
    prompt_sizes: int = 0
    fail_on_call: int | None = None
    error: Exception | None = None
    delay: float = 0.0
    calls: list[Call] = field(default_factory=list)
    checked: list[Sampling] = field(default_factory=list)
    """Every Sampling given to check_sampling."""
    cancelled: int = 0
    started: bool = False
    closed: bool = False

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    async def check_sampling(self, sampling: Sampling) -> None:
        self.checked.append(sampling)

    async def check_health(self) -> None:
        if self.error is not None and self.fail_on_call is None:
            raise self.error

    async def model_context(self) -> int | None:
        return self.context_length

    def tokens(self, messages: Sequence[Message]) -> int:
        return sum(self.count_tokens(m["content"]) for m in messages)

    async def prompt_size(self, role: Role, messages: Sequence[Message],
                          tools: Tools | None = None) -> PromptSize | None:
        if self.context_length is None:
            return None
        self.prompt_sizes += 1
        definitions = self.count_tokens(json.dumps(tools.definitions)) if tools is not None else 0
        return PromptSize(self.tokens(messages) + definitions, self.context_length)

    def _record(self, call: Call) -> None:
        self.calls.append(call)
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            assert self.error is not None
            raise self.error
        if self.context_length is not None and self.tokens(call.messages) >= self.context_length:
            raise ContextLengthExceeded(f"The prompt has {self.tokens(call.messages)} tokens; the model's "
                                        f"context length is {self.context_length}")

    @staticmethod
    def usage(call: Call, texts: Sequence[str]) -> Usage:
        prompt = sum(len(m["content"]) for m in call.messages)
        return Usage(prompt, sum(len(t.split()) for t in texts), 1)

    async def _wait(self) -> None:
        """Before a request answers: `delay` seconds; a cancellation meanwhile is counted."""
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def generate(self, role: Role, messages: Sequence[Message], sampling: Sampling, n: int) -> Generation:
        call = Call(role, list(messages), sampling, n, False)
        self._record(call)
        await self._wait()
        texts = [self.reply(call, i) for i in range(n)]
        return Generation([Completion(t, "stop") for t in texts], self.usage(call, texts))

    async def stream(self, role: Role, messages: Sequence[Message],
                     sampling: Sampling) -> AsyncGenerator[StreamDelta, None]:
        call = Call(role, list(messages), sampling, 1, True)
        self._record(call)
        text = self.reply(call, 0)
        words = text.split(" ")
        try:
            for i, word in enumerate(words):
                await asyncio.sleep(self.delay)
                yield StreamDelta(word if i == 0 else " " + word)
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise
        yield StreamDelta("", "stop", self.usage(call, [text]))
