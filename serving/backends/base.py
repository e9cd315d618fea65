"""The backend interface: generate n samples of a chat prompt, or stream one.

Cancellation is asyncio's: cancelling the task that awaits `generate` or iterates
`stream` must abort the work in the engine or upstream (vLLM `abort`, a closed
upstream connection), so an abandoned request stops costing compute.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from serving.format import Message

Role = Literal["proposer", "aggregator"]
"""Which call this is; the `openai` backend may route the two roles to different deployments."""


@dataclass(frozen=True)
class ToolCall:
    """A function call the model made (OpenAI's shape: `arguments` is JSON text)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Tools:
    """The function tools a request offers the model, and how it may use them (OpenAI's names).

    The definitions reach the prompt through the model's chat template; `choice` "none" asks for text
    (the model may still describe a call in words), anything else lets the engine or upstream parse
    calls out of what the model writes."""

    definitions: tuple[dict[str, Any], ...]
    """Each as the client sent it: {"type": "function", "function": {"name", "description", "parameters"}}."""
    choice: str | dict[str, Any] = "auto"
    """"none", "auto", "required", or {"type": "function", "function": {"name": ...}}."""
    parallel: bool | None = None
    """parallel_tool_calls as the client sent it (None: the engine's default)."""


@dataclass(frozen=True)
class ResponseFormat:
    """The shape an answer must take: JSON (OpenAI's `response_format` other than "text").

    The engine constrains generation to it (vLLM's structured outputs); an upstream is sent it as
    `response_format`. `strict` is passed on as the client sent it: in process, every JSON answer is
    constrained, strict or not."""

    type: Literal["json_object", "json_schema"]
    """json_object: any JSON value the engine's JSON grammar allows; json_schema: JSON valid under `schema`."""
    schema: dict[str, Any] | None = None
    """The JSON schema (json_schema only)."""
    name: str = "response"
    """The schema's name, as the client sent it (json_schema only)."""
    strict: bool | None = None
    description: str | None = None

    def wire(self) -> dict[str, Any]:
        """OpenAI's `response_format` for this shape."""
        if self.type == "json_object":
            return {"type": "json_object"}
        spec: dict[str, Any] = {"name": self.name, "schema": self.schema}
        if self.strict is not None:
            spec["strict"] = self.strict
        if self.description is not None:
            spec["description"] = self.description
        return {"type": "json_schema", "json_schema": spec}


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters for one engine request (OpenAI names)."""

    temperature: float
    top_p: float
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    tools: Tools | None = None
    """Tools the prompt offers; None: a plain chat prompt."""
    response_format: ResponseFormat | None = None
    """The JSON the completion must be; None: free text. A forced tool call (tool_choice "required" or
    named) takes precedence in process, as in vLLM: the call's arguments are the constraint then."""


@dataclass
class Usage:
    """Tokens spent: prompt tokens count once per request (n samples share one prompt)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.requests += other.requests


@dataclass(frozen=True)
class Completion:
    """One sample: its text, the tool calls parsed out of it, and why it ended ("stop", "length",
    "tool_calls")."""

    text: str
    finish_reason: str | None
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass
class Generation:
    """The n samples of one request and what the request cost."""

    completions: list[Completion]
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a streamed tool call, in the shape of OpenAI's chunk `delta.tool_calls[]`: the first
    piece of call `index` (0, 1, ... within the answer) carries its `id` and `name`; every piece may
    carry more of its `arguments` (JSON text: the call's arguments are all its pieces joined in order).
    A backend that knows a call only once it is complete sends it as one piece with all three."""

    index: int
    arguments: str = ""
    id: str | None = None
    name: str | None = None


def joined_calls(pieces: Sequence[ToolCallDelta]) -> tuple[ToolCall, ...]:
    """The whole calls that `pieces` (in the order streamed) make, by index."""
    calls: dict[int, list[str]] = {}
    for piece in pieces:
        call = calls.setdefault(piece.index, ["", "", ""])
        call[0] = piece.id or call[0]
        call[1] = piece.name or call[1]
        call[2] += piece.arguments
    return tuple(ToolCall(*calls[index]) for index in sorted(calls))


@dataclass(frozen=True)
class StreamDelta:
    """A piece of a streamed sample: more of its text, and pieces of the tool calls it makes
    (ToolCallDelta: as the engine's parser or the upstream finds them; a forced call whole once its
    JSON is complete). The last one carries finish_reason and the request's usage."""

    text: str
    finish_reason: str | None = None
    usage: Usage | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()


@dataclass(frozen=True)
class PromptSize:
    """How many tokens a chat prompt takes, and the context it must fit in."""

    tokens: int
    """The prompt's tokens, chat template included (what the engine would be given)."""
    context_length: int
    """The model's context: prompt + completion tokens."""


class Backend(Protocol):
    """What the pipeline needs from an inference engine."""

    async def start(self) -> None:
        """Acquire resources (load the engine, open connection pools)."""
        ...

    async def close(self) -> None:
        """Release everything `start` acquired; in-flight requests are aborted."""
        ...

    async def generate(self, role: Role, messages: Sequence[Message], sampling: Sampling,
                       n: int) -> Generation:
        """Sample `n` completions of one chat prompt as ONE request (the samples share the prompt)."""
        ...

    def stream(self, role: Role, messages: Sequence[Message], sampling: Sampling) -> AsyncGenerator[StreamDelta, None]:
        """Sample one completion and yield its text (and pieces of its tool calls) as the engine produces it."""
        ...

    async def prompt_size(self, role: Role, messages: Sequence[Message],
                          tools: Tools | None = None) -> PromptSize | None:
        """The size of the prompt `messages` (and the definitions of `tools`) make for `role`'s model,
        or None when this backend cannot count tokens (then no context budget is applied)."""
        ...

    async def check_sampling(self, sampling: Sampling) -> None:
        """Raise InvalidRequest, naming the problem, when this backend cannot honour `sampling`: a JSON
        schema (response format, forced tool call) its engine cannot compile. Called before any generation."""
        ...

    async def check_health(self) -> None:
        """Raise BackendError when the backend cannot serve."""
        ...

    async def model_context(self) -> int | None:
        """The answering (aggregator) model's context length in tokens when known (the engine's
        max_model_len, or what an upstream's /models declares), else None. Never raises."""
        ...
