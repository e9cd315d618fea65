"""OpenAI Responses API wire types (`POST /v1/responses`): the request, the Response object and its
output items. Pydantic models only; names mirror OpenAI's (openai.types.responses).

Input items and content parts are tagged unions, so an item this service cannot take (an image, a
hosted tool's call, an item reference) is a 400 naming where it is. Fields OpenAI defines that the
service cannot honour are accepted here and refused with a 400 by `ResponsesRequest.unsupported`,
never silently dropped; fields that only tune OpenAI's own platform (store, metadata, user,
service_tier, prompt_cache_key, safety_identifier) are accepted and have no effect.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from app.protocol import AftInfo, AftOptions


def _tag(value: Any, default: str | None = None) -> str | None:
    """The `type` of an item or part, whether pydantic is given a dict or a model."""
    if isinstance(value, dict):
        tag = value.get("type", default)
        return tag if isinstance(tag, str) else None
    return getattr(value, "type", None)


def _item_tag(value: Any) -> str | None:
    return _tag(value, "message")  # EasyInputMessage: a message may leave `type` out


# ---- input ---------------------------------------------------------------------------------------

class InputText(BaseModel):
    type: Literal["input_text"]
    text: str


class OutputTextPart(BaseModel):
    """An earlier answer's text, sent back in an assistant message."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["output_text"]
    text: str


ContentPart = Annotated[
    Annotated[InputText, Tag("input_text")] | Annotated[OutputTextPart, Tag("output_text")],
    Discriminator(_tag, custom_error_type="unsupported_content",
                  custom_error_message="content parts must be input_text (or output_text in an assistant "
                                       "message): images, files and audio are not supported")]


class InputMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")  # id, status of an output message sent back

    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: list[ContentPart] | str

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class FunctionCallInput(BaseModel):
    """A call the model made in an earlier turn (the Response's `function_call` item, sent back)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str


class FunctionCallOutputInput(BaseModel):
    """The result of a call, for the call named by `call_id`."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["function_call_output"]
    call_id: str
    output: str | list[InputText]

    def text(self) -> str:
        return self.output if isinstance(self.output, str) else "".join(part.text for part in self.output)


class ReasoningInput(BaseModel):
    """A reasoning item of an earlier Response sent back: its drafts are not read again (as on chat,
    where an assistant message's reasoning is not part of the prompt)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["reasoning"]


InputItem = Annotated[
    Annotated[InputMessage, Tag("message")] | Annotated[FunctionCallInput, Tag("function_call")]
    | Annotated[FunctionCallOutputInput, Tag("function_call_output")] | Annotated[ReasoningInput, Tag("reasoning")],
    Discriminator(_item_tag, custom_error_type="unsupported_input_item",
                  custom_error_message="input items must be messages, function_call, function_call_output or "
                                       "reasoning items; item references and hosted tools' items are not supported")]


# ---- tools and text format -----------------------------------------------------------------------

class FunctionTool(BaseModel):
    type: Literal["function"] = Field(description="Only function tools: hosted tools (web search, file search, "
                                      "computer use, MCP) are not supported.")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionToolChoice(BaseModel):
    type: Literal["function"]
    name: str


class TextFormatText(BaseModel):
    type: Literal["text"]


class TextFormatJSONObject(BaseModel):
    type: Literal["json_object"]


class TextFormatJSONSchema(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    type: Literal["json_schema"]
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


TextFormat = Annotated[TextFormatText | TextFormatJSONObject | TextFormatJSONSchema, Field(discriminator="type")]


class TextConfig(BaseModel):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


# ---- the request ---------------------------------------------------------------------------------

_INCLUDABLE = "reasoning.encrypted_content"
"""The one `include` value taken: reasoning items come with their text in the clear, nothing to encrypt."""


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    input: list[InputItem] | str
    instructions: str | None = Field(default=None, description="A system message before the input.")
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | FunctionToolChoice | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stream: bool = False
    aft: AftOptions | None = None

    # Accepted; nothing is kept and nothing changes (see the module docstring).
    store: bool | None = Field(default=None, description="Accepted; no response is stored either way.")
    metadata: dict[str, str] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    service_tier: str | None = None
    stream_options: dict[str, Any] | None = None

    # Accepted so that a client sending them gets a clear refusal rather than silence.
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    background: bool | None = None
    include: list[str] | None = None
    reasoning: dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
    top_logprobs: int | None = None
    max_tool_calls: int | None = None
    truncation: Literal["auto", "disabled"] | None = None

    def unsupported(self) -> tuple[str, str] | None:
        """(param, reason) for the first requested feature the service does not provide."""
        if self.previous_response_id is not None:
            return "previous_response_id", ("previous_response_id is not supported: this server keeps no "
                                            "responses; send the whole conversation in `input`")
        if self.conversation is not None:
            return "conversation", "conversations are not supported: send the whole conversation in `input`"
        if self.background:
            return "background", "background responses are not supported: this server keeps no responses"
        refused = [item for item in self.include or [] if item != _INCLUDABLE]
        if refused:
            return "include", f"include {refused[0]!r} is not supported"
        if self.reasoning and any(v is not None for v in self.reasoning.values()):
            return "reasoning", ("reasoning options are not supported; the drafts come as a reasoning item "
                                 "with aft.reasoning")
        if self.prompt is not None:
            return "prompt", "prompt templates are not supported"
        if self.top_logprobs:
            return "top_logprobs", "logprobs are not supported: the answer is an aggregation of several samples"
        if self.max_tool_calls is not None:
            return "max_tool_calls", "max_tool_calls is not supported"
        if self.truncation == "auto":
            return "truncation", "truncation 'auto' is not supported: a conversation that does not fit is refused"
        if self.text is not None and self.text.verbosity not in (None, "medium"):
            return "text.verbosity", "text.verbosity is not supported"
        return None


Status = Literal["in_progress", "completed", "incomplete"]


# ---- the Response --------------------------------------------------------------------------------

class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] = Field(default_factory=list)


class OutputMessage(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: Status
    content: list[OutputText]


class FunctionCallOutput(BaseModel):
    """A call the answer made: the client runs it and sends back a function_call_output with its call_id."""

    id: str
    type: Literal["function_call"] = "function_call"
    call_id: str
    name: str
    arguments: str
    status: Status


class ReasoningText(BaseModel):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


class ReasoningOutput(BaseModel):
    """With aft.reasoning: every round's drafts, each headed by its round and number."""

    id: str
    type: Literal["reasoning"] = "reasoning"
    summary: list[Any] = Field(default_factory=list)
    content: list[ReasoningText]
    status: Status


OutputItem = Annotated[OutputMessage | FunctionCallOutput | ReasoningOutput, Field(discriminator="type")]


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = Field(default=0, description="The drafts' tokens: every round's before the answer's.")


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"]


class ResponsesResponse(BaseModel):
    """The Response object: the answer's output items, its usage, the request's settings echoed."""

    model_config = ConfigDict(serialize_by_alias=True)

    id: str
    object: Literal["response"] = "response"
    created_at: int = Field(default_factory=lambda: int(time.time()))
    status: Literal["completed", "incomplete", "in_progress"]
    model: str
    output: list[OutputItem]
    error: None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    parallel_tool_calls: bool = True
    temperature: float | None = None
    top_p: float | None = None
    tool_choice: Literal["none", "auto", "required"] | FunctionToolChoice = "auto"
    tools: list[FunctionTool] = Field(default_factory=list)
    text: TextConfig = Field(default_factory=lambda: TextConfig(format=TextFormatText(type="text")))
    metadata: dict[str, str] = Field(default_factory=dict)
    store: bool = Field(default=False, description="Always false: no response is kept.")
    background: bool = False
    previous_response_id: None = None
    truncation: Literal["disabled"] = "disabled"
    user: str | None = None
    usage: ResponseUsage | None = None
    aft: AftInfo | None = None
