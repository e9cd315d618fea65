"""A chat request plus server settings -> the pipeline's parameters, with bounds checked."""

from __future__ import annotations

from app.protocol import ChatCompletionRequest
from app.settings import Settings
from serving.backends.base import Sampling
from serving.errors import InvalidRequest
from serving.format import Message
from serving.pipeline import PipelineParams


def _bounded(value: int, limit: int, param: str, what: str) -> int:
    if value > limit:
        raise InvalidRequest(f"{param} is {value}, but this server allows at most {limit} {what}", param=param)
    return value


def conversation(request: ChatCompletionRequest) -> list[Message]:
    """The request's messages as plain-text chat messages."""
    return [{"role": m.role, "content": m.text()} for m in request.messages]


def pipeline_params(request: ChatCompletionRequest, settings: Settings) -> PipelineParams:
    """Resolve request options against server defaults; out-of-range values name their parameter."""
    aft = request.aft
    proposals = aft.proposals if aft and aft.proposals is not None else settings.default_proposals
    rounds = aft.rounds if aft and aft.rounds is not None else settings.default_rounds
    _bounded(proposals, settings.max_proposals, "aft.proposals", "proposals")
    _bounded(rounds, settings.max_rounds, "aft.rounds", "rounds")
    _bounded(request.n, settings.max_n, "n", "answers per request")
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

    final = Sampling(
        temperature=request.temperature if request.temperature is not None else settings.temperature,
        top_p=request.top_p if request.top_p is not None else settings.top_p,
        max_tokens=max_tokens,
        stop=stop,
        seed=request.seed,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
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
    )
    return PipelineParams(proposals=proposals, rounds=rounds, draft_sampling=drafts, final_sampling=final)
