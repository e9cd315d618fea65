"""A chat request plus server settings -> the pipeline's parameters, with bounds checked."""

from __future__ import annotations

from app.protocol import AftOptions, ChatCompletionRequest, ChatMessage
from app.response_format import response_format
from app.settings import Settings
from serving.backends.base import ResponseFormat, Sampling, Tools
from serving.errors import InvalidRequest
from serving.format import Message
from serving.pipeline import PipelineParams


def _bounded(value: int, limit: int, param: str, what: str) -> int:
    if value > limit:
        raise InvalidRequest(f"{param} is {value}, but this server allows at most {limit} {what}", param=param)
    return value


def _message(message: ChatMessage) -> Message:
    out: Message = {"role": message.role, "content": message.text()}
    if message.tool_calls:
        out["tool_calls"] = [call.model_dump() for call in message.tool_calls]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def conversation(request: ChatCompletionRequest) -> list[Message]:
    """The request's messages as plain-text chat messages; tool-call turns keep their calls and ids."""
    return [_message(m) for m in request.messages]


def tools(request: ChatCompletionRequest, settings: Settings) -> tuple[Tools | None, Tools | None]:
    """(drafts' tools, final answer's tools). Drafts see the definitions but are asked for text
    (tool_choice "none"). The final answer gets "required" and a named function as the client sent
    them, always: the engine constrains the call to the tools' JSON schema (as `vllm serve` does
    without flags), an upstream is passed the choice. "auto" needs the server to parse tool calls
    (--enable-auto-tool-choice); without it the answer is text (tool_choice "none")."""
    choice = request.tool_choice
    if not request.tools:
        if choice not in (None, "none"):
            raise InvalidRequest("tool_choice needs tools: the request defines none", param="tool_choice")
        return None, None
    definitions = tuple(tool.model_dump(exclude_none=True) for tool in request.tools)
    wire: str | dict[str, object] = "auto" if choice is None else (
        choice if isinstance(choice, str) else choice.model_dump())
    if not isinstance(choice, str) and choice is not None:
        names = {tool.function.name for tool in request.tools}
        if choice.function.name not in names:
            raise InvalidRequest(f"tool_choice names the function '{choice.function.name}', which tools "
                                 "does not define", param="tool_choice")
    if not settings.enable_auto_tool_choice and wire == "auto":
        wire = "none"
    drafts = Tools(definitions, "none")
    return drafts, Tools(definitions, wire, request.parallel_tool_calls)


CONSTRAINED_DRAFTS = False
"""Whether drafts follow a JSON response_format too when the request does not say (aft.constrained_drafts).
Measured on the toy checkpoint (bench/structured.py, docs/api.md#structured-outputs): free drafts were as
good where the model writes the schema well, and better where it does not (more valid answers, fewer tokens)."""


def draft_format(final: ResponseFormat | None, aft: AftOptions | None) -> ResponseFormat | None:
    """The drafts' response format: none (free drafts), unless the request or CONSTRAINED_DRAFTS says so."""
    asked = aft.constrained_drafts if aft else None
    return final if (CONSTRAINED_DRAFTS if asked is None else asked) else None


def early_exit(aft: AftOptions | None, settings: Settings) -> float | None:
    """The share of drafts that must agree to stop early: the request's (null or false: off), else the server's."""
    if aft is None or "early_exit" not in aft.model_fields_set:
        return settings.early_exit
    return 1.0 if aft.early_exit == "all" else aft.early_exit or None


def pipeline_params(request: ChatCompletionRequest, settings: Settings) -> PipelineParams:
    """Resolve request options against server defaults; out-of-range values name their parameter."""
    aft = request.aft
    proposals = aft.proposals if aft and aft.proposals is not None else settings.default_proposals
    rounds = aft.rounds if aft and aft.rounds is not None else settings.default_rounds
    _bounded(proposals, settings.max_proposals, "aft.proposals", "proposals")
    _bounded(rounds, settings.max_rounds, "aft.rounds", "rounds")
    _bounded(request.n, settings.max_n, "n", "answers per request")
    subset = aft.subset if aft else None
    if subset is not None:
        _bounded(subset, settings.max_proposals, "aft.subset", "drafts per aggregation")
    if request.max_tokens is not None and request.max_completion_tokens is not None \
            and request.max_tokens != request.max_completion_tokens:
        raise InvalidRequest("max_tokens and max_completion_tokens disagree; send one of them",
                             param="max_completion_tokens")
    max_tokens = request.max_completion_tokens or request.max_tokens or settings.max_tokens
    stop = request.stop_list()
    if len(stop) > 4:
        raise InvalidRequest("stop takes at most 4 sequences", param="stop")
    if any(not s for s in stop):
        raise InvalidRequest("stop sequences must not be empty", param="stop")

    draft_tools, final_tools = tools(request, settings)
    answer_format = response_format(request.response_format)
    final = Sampling(
        temperature=request.temperature if request.temperature is not None else settings.temperature,
        top_p=request.top_p if request.top_p is not None else settings.top_p,
        max_tokens=max_tokens,
        stop=stop,
        seed=request.seed,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
        tools=final_tools,
        response_format=answer_format,
    )
    # Drafts are the model's working material: the client's stop sequences and
    # penalties shape the answer it reads, not the drafts the aggregator weighs.
    drafts = Sampling(
        temperature=aft.proposal_temperature if aft and aft.proposal_temperature is not None
        else settings.proposal_temperature,
        top_p=aft.proposal_top_p if aft and aft.proposal_top_p is not None else settings.proposal_top_p,
        max_tokens=aft.proposal_max_tokens if aft and aft.proposal_max_tokens is not None
        else settings.proposal_max_tokens,
        seed=request.seed,
        tools=draft_tools,
        response_format=draft_format(answer_format, aft),
    )
    return PipelineParams(proposals=proposals, rounds=rounds, draft_sampling=drafts, final_sampling=final,
                          early_exit=early_exit(aft, settings), subset=subset)


def subset_read(params: PipelineParams) -> int:
    """How many drafts each aggregation reads: K, or all N."""
    return params.proposals if params.subset is None else min(params.subset, params.proposals)
