"""The aggregation format: the one definition of the prompts AFT models are trained and served with.

Proposer call: the system message "\\n", then the conversation unchanged.
Aggregator call: AGGREGATION_TEMPLATE + "\\n" + the numbered proposals as the
system message, then the conversation unchanged. Both are verbatim from the
reference implementation (github.com/Linzwcs/AFT, `src/aft/net.py`); the released
checkpoints were trained on exactly these bytes.

A client's own system prompt. The reference never meets one, and many chat
templates refuse a second system message or one that is not first. So the
leading system (or developer) messages of the conversation are joined into one
text S and folded into the single system message we send:
- proposer: S replaces the empty placeholder "\\n" (what a plain chat model sees);
- aggregator: S, a blank line, then the aggregation system message, so the
  client's instructions come first and the template with its numbered
  proposals stays one contiguous block, exactly as trained.
Without a client system prompt the bytes are the reference's.

Two layouts of the aggregator call (`AggregationFormat`, declared by a checkpoint's aft.json):
- `paper`: the drafts in the system message, before the conversation, as above. The released
  checkpoints were trained on it, and it is the default.
- `conversation-first`: the proposer call's messages unchanged, then one user message holding
  AGGREGATION_TEMPLATE + "\n" + the numbered proposals. Every aggregation prompt then starts with
  the proposer prompt's bytes, so an engine's prefix cache serves the conversation to every round
  instead of prefilling it again (on a 5,000-token conversation: bench/README.md). Only for
  checkpoints trained on it (`aft data --format conversation-first`).

Tool-call turns (an assistant message with `tool_calls`, a `tool` message with its result) pass
through unchanged, like every other message after the system one: the model's chat template
renders them. A draft that carries tool calls reaches the next round as text (`draft_text`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, NotRequired, TypedDict

FORMAT_VERSION = 1
"""Version of this format, written into checkpoint manifests (aft.json)."""

PROPOSER_SYSTEM = "\n"

AGGREGATION_TEMPLATE = (
    "You are a helpful aggregator.\nYou have been provided with a set of responses from various "
    "open-source models to the latest user query. Your task is to synthesize these responses into a "
    "single, high-quality response. It is crucial to critically evaluate the information provided in "
    "these responses, recognizing that some of it may be biased or incorrect. Your response should not "
    "simply replicate the given answers but should offer a refined, accurate, and comprehensive reply "
    "to the instruction. Ensure your response is well-structured, coherent, and adheres to the highest "
    "standards of accuracy and reliability.\n    \n    Responses from models:"
)

_SYSTEM_ROLES = ("system", "developer")


class AggregationFormat(StrEnum):
    """Where the aggregator's prompt puts the drafts (module docstring)."""

    PAPER = "paper"
    CONVERSATION_FIRST = "conversation-first"


class Message(TypedDict):
    """One chat message with plain-text content, as chat templates take it."""

    role: str
    content: str
    tool_calls: NotRequired[list[dict[str, Any]]]
    """An assistant turn's calls, in OpenAI's shape ({"id", "type", "function": {"name", "arguments"}})."""
    tool_call_id: NotRequired[str]
    """A `tool` message: the call whose result it carries."""


def split_system(conversation: Sequence[Message]) -> tuple[str | None, list[Message]]:
    """Separate the leading system/developer messages (joined by a blank line) from the rest."""
    i = 0
    while i < len(conversation) and conversation[i]["role"] in _SYSTEM_ROLES:
        i += 1
    if i == 0:
        return None, list(conversation)
    return "\n\n".join(m["content"] for m in conversation[:i]), list(conversation[i:])


def aggregation_system(proposals: Sequence[str]) -> str:
    """The template and the numbered proposals: the paper's system message (reference bytes), and the
    last user message of the conversation-first layout."""
    return AGGREGATION_TEMPLATE + "\n" + "\n".join(f"{i + 1}. {p}" for i, p in enumerate(proposals))


def proposer_messages(conversation: Sequence[Message]) -> list[Message]:
    """Messages for a proposer call: one system message, then the conversation."""
    client_system, rest = split_system(conversation)
    return [{"role": "system", "content": client_system or PROPOSER_SYSTEM}, *rest]


def aggregator_messages(conversation: Sequence[Message], proposals: Sequence[str],
                        fmt: AggregationFormat = AggregationFormat.PAPER) -> list[Message]:
    """Messages for an aggregator call over `proposals`. Paper: one system message holding them, then
    the conversation. Conversation-first: the proposer's messages, then a user message holding them."""
    if fmt is AggregationFormat.CONVERSATION_FIRST:
        return [*proposer_messages(conversation), {"role": "user", "content": aggregation_system(proposals)}]
    client_system, rest = split_system(conversation)
    system = aggregation_system(proposals)
    if client_system:
        system = client_system + "\n\n" + system
    return [{"role": "system", "content": system}, *rest]


def draft_text(text: str, tool_calls: Sequence[tuple[str, str]]) -> str:
    """A draft as the next round reads it: its text, then each (name, arguments) call it made as
    one JSON line, so an aggregator sees a proposed call the way it sees a proposed answer."""
    calls = [json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
             for name, arguments in tool_calls]
    return "\n".join([text, *calls]) if text else "\n".join(calls)
