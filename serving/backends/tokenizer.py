"""A local tokenizer that counts an upstream model's chat prompts (`aft serve --tokenizer`).

For upstreams that cannot count tokens themselves (vLLM's /tokenize is the way for those that can).
It must be the upstream model's own tokenizer and chat template; a different one miscounts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from serving.backends.base import Tools
from serving.backends.vllm_tools import template_messages
from serving.format import Message

_THREAD_TOKENIZE_CHARS = 8192
"""Prompts longer than this (characters) are counted in a worker thread, so that a long prompt does
not hold the event loop (and every stream on it) while it is tokenized."""


class LocalTokenizer:
    """Hugging Face's tokenizer for `name` (a path or hub id), loaded by `load()`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._tokenizer: Any = None

    async def load(self) -> None:
        """Load it (in a thread: reading files may take seconds); raises if it cannot be loaded."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = await asyncio.to_thread(AutoTokenizer.from_pretrained, self.name)

    def _count(self, messages: Sequence[Message], tools: Tools | None = None) -> int:
        ids = self._tokenizer.apply_chat_template(
            template_messages([dict(m) for m in messages]), add_generation_prompt=True, tokenize=True,
            return_dict=False, tools=list(tools.definitions) if tools is not None else None)
        return len(ids)

    async def count(self, messages: Sequence[Message], tools: Tools | None = None) -> int:
        """The tokens of the prompt `messages` (and `tools`' definitions) make, the generation prompt included."""
        if self._tokenizer is None:
            raise RuntimeError("LocalTokenizer.count before load()")
        if sum(len(m["content"]) for m in messages) > _THREAD_TOKENIZE_CHARS or tools is not None:
            return await asyncio.to_thread(self._count, messages, tools)
        return self._count(messages)
