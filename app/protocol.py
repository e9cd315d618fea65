"""OpenAI Chat Completions wire types (requests, responses, stream chunks) and the `aft` options.

Pydantic models only. Names mirror OpenAI's. Fields we accept but cannot honour
are refused with a 400 naming them (see `ChatCompletionRequest.check_supported`),
never silently dropped.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class FunctionCall(BaseModel):
    name: str
    arguments: str = Field(description="The call's arguments as JSON text.")


class ToolCall(BaseModel):
    """A call the assistant made, in a response or in a conversation's assistant turn."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDefinition(BaseModel):
    type: Literal["function"]
    function: FunctionDefinition


class ToolChoiceFunction(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    """tool_choice naming the one function the model must call."""

    type: Literal["function"]
    function: ToolChoiceFunction


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = Field(None, description="An assistant turn's calls (content may be null).")
    tool_call_id: str | None = Field(None, description="A tool message: the call whose result it carries.")

    def text(self) -> str:
        """The content as one string (text parts joined, OpenAI's semantics for text-only parts)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False


class AftOptions(BaseModel):
    """Propose-and-aggregate controls (the OpenAI SDK sends them with `extra_body={"aft": {...}}`)."""

    model_config = ConfigDict(extra="forbid")

    proposals: int | None = Field(None, ge=1, description="N: proposals per round.")
    rounds: int | None = Field(None, ge=0, description="Aggregation rounds; 0 is plain generation.")
    proposal_temperature: float | None = Field(None, ge=0, le=2)
    proposal_top_p: float | None = Field(None, gt=0, le=1)
    proposal_max_tokens: int | None = Field(None, ge=1)
    include_proposals: bool = Field(False, description="Return every round's outputs with the answer.")
    reasoning: bool | None = Field(None, description="Send every round's drafts as the answer's reasoning "
                                   "(`reasoning` and `reasoning_content`) before its content; default: the server's.")
    early_exit: Annotated[float, Field(gt=0, le=1)] | Literal["all"] | bool | None = Field(
        None, description="Stop after a round whose drafts agree (identical after whitespace normalisation): "
        "\"all\" (or true), or the share of the N drafts that must agree; the agreed draft is the answer. "
        "false or null: off. Default: the server's.")
    subset: int | None = Field(None, ge=1, description="K: every aggregation reads a random K of the round "
                               "before's N outputs (Recursive Self-Aggregation). Default: all N.")
    constrained_drafts: bool | None = Field(None, description="With a JSON response_format: whether the drafts "
                                            "are constrained to it too (the answer always is). Default: false.")

    @field_validator("early_exit", mode="before")
    @classmethod
    def _share(cls, value: object) -> object:
        # One clear message for every bad value, rather than one per member of the union.
        if value is True:
            return "all"
        if value is None or value is False or value == "all":
            return value
        if not isinstance(value, int | float) or not 0 < value <= 1:
            raise ValueError(f'must be "all" (or true), a share of the drafts above 0 and at most 1, or false; '
                             f"got {value!r}")
        return value


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    aft: AftOptions | None = None

    tools: list[ToolDefinition] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = Field(
        None, description='OpenAI\'s: {"type": "text"}, {"type": "json_object"}, or {"type": "json_schema", '
        '"json_schema": {"name", "schema", "strict"}}; checked, and read, by app/params.py.')

    # Accepted so a client sending them gets a clear refusal rather than silence.
    functions: list[Any] | None = None
    logprobs: bool | None = None

    def unsupported(self) -> tuple[str, str] | None:
        """(param, reason) for the first requested feature the service does not provide."""
        if self.functions:
            return "functions", "the legacy `functions` field is not supported; send `tools`"
        if self.logprobs:
            return "logprobs", "logprobs are not supported: the answer is an aggregation of several samples"
        return None

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class UsageInfo(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class RoundUsage(UsageInfo):
    round: int
    requests: int


class AftLayer(BaseModel):
    round: int
    outputs: list[str]


class AftAnswer(BaseModel):
    """What propose-and-aggregate spent on one answer, and (on request) its drafts."""

    index: int
    usage_by_round: list[RoundUsage]
    layers: list[AftLayer] | None = None
    drafts_capped_to: int | None = Field(None, description="Drafts' max_tokens when the context budget lowered it.")
    drafts_trimmed: int = Field(0, description="Drafts cut so that an aggregation prompt fits the context.")
    early_exit_round: int | None = Field(None, description="The round whose agreeing drafts became the answer "
                                         "(aft.early_exit); null when the full pipeline ran.")


class AftInfo(BaseModel):
    """The response's `aft` field: the pipeline's shape and each answer's rounds."""

    proposals: int
    rounds: int
    subset: int = Field(description="Drafts each aggregation read: aft.subset, or all N.")
    answers: list[AftAnswer]


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    reasoning: str | None = Field(None, description="With aft.reasoning: every round's drafts (vLLM's name).")
    reasoning_content: str | None = Field(None, description="The same text, under the name older clients read.")
    tool_calls: list[ToolCall] | None = None


class Choice(BaseModel):
    index: int
    message: ResponseMessage
    finish_reason: str | None
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: UsageInfo
    aft: AftInfo | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "aft"
    max_model_len: int | None = None
    """The context length in tokens (prompt and answer), as `vllm serve` reports it; None: not known."""


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo
