"""Service configuration: one Settings object, from AFT_* environment variables or `aft serve` flags."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from serving.format import AggregationFormat
from serving.manifest import read_manifest

logger = logging.getLogger(__name__)

# aft.json recommendation -> the Settings field it becomes the default of.
_RECOMMENDED_FIELDS = {
    "proposals": "default_proposals", "rounds": "default_rounds",
    "proposal_temperature": "proposal_temperature", "proposal_top_p": "proposal_top_p",
    "temperature": "temperature", "top_p": "top_p", "early_exit": "early_exit",
}


class Settings(BaseSettings):
    """Everything the service can be told. Each field is also an `aft serve --flag`."""

    model_config = SettingsConfigDict(env_prefix="AFT_", env_file=None, extra="ignore")

    # Where generations come from.
    backend: Literal["vllm", "openai"] = Field("vllm", description="vllm: in-process engine; openai: OpenAI-compatible upstream(s).")
    model: str | None = Field(None, description="vllm backend: checkpoint path or hub id to load. openai backend: upstream model name (default: the upstream's first model).")
    served_model_name: str | None = Field(None, description="Model id clients send and /v1/models lists (default: --model, or 'aft').")
    upstream_url: str | None = Field(None, description="openai backend: base URL of the proposer upstream, as an OpenAI client takes it (http://host:8000/v1).")
    upstream_api_key: str | None = Field(None, description="openai backend: API key for the proposer upstream.")
    aggregator_upstream_url: str | None = Field(None, description="openai backend: base URL of the aggregator upstream (default: --upstream-url).")
    aggregator_model: str | None = Field(None, description="openai backend: aggregator model name upstream (default: --model).")
    aggregator_upstream_api_key: str | None = Field(None, description="openai backend: API key for the aggregator upstream (default: --upstream-api-key).")
    upstream_timeout: float = Field(120.0, gt=0, description="openai backend: seconds to wait for an upstream's next bytes (a non-streamed answer is one wait; a stream waits per chunk).")
    upstream_connect_timeout: float = Field(5.0, gt=0, description="openai backend: seconds to connect to an upstream; also the limit of a health check.")
    upstream_retries: int = Field(2, ge=0, description="openai backend: retries, with back-off, of an upstream call that could not connect or got 502/503 (only before anything was streamed).")
    tokenizer: str | None = Field(None, description="openai backend: local tokenizer (path or hub id) that counts prompts for the context budget (default: the upstream's vLLM /tokenize).")

    # HTTP.
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on.")
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list, description="Bearer keys accepted (repeat the flag, or comma-separate AFT_API_KEYS). None: no auth.")
    protect_metrics: bool = Field(False, description="Ask for one of the API keys on /metrics too. Off: /metrics is open like /health, so that Prometheus scrapes it without a key (pod annotations cannot carry one).")
    max_request_bytes: int = Field(4 * 1024 * 1024, gt=0, description="Largest request body accepted (413 above).")
    max_concurrent_requests: int = Field(256, gt=0, description="Chat requests served at once; more get 503 at once (no unbounded queue).")
    request_timeout: float = Field(300.0, gt=0, description="Seconds a chat request may take in all; past it: 504, or an error event ending a stream.")
    shutdown_timeout: float = Field(30.0, ge=0, description="On SIGTERM, seconds requests in flight get to finish (new ones get 503); then they end with an error.")
    stream_keepalive: float = Field(5.0, gt=0, description="Seconds between ': keep-alive' comments on a streamed answer (proxies cut silent connections).")
    body_read_timeout: float = Field(30.0, gt=0, description="Seconds a client may pause while sending its request body (408 past it).")
    keep_alive_timeout: int = Field(5, ge=1, description="Seconds an idle keep-alive connection is kept open.")

    # Propose-and-aggregate defaults and bounds (reference config: N=5, rounds=2).
    default_proposals: int = Field(5, ge=1, description="N: proposals per round when the request does not say.")
    default_rounds: int = Field(2, ge=0, description="Aggregation rounds when the request does not say (0: plain generation).")
    max_proposals: int = Field(16, ge=1, description="Largest N a request may ask for.")
    max_rounds: int = Field(4, ge=0, description="Most rounds a request may ask for.")
    max_n: int = Field(8, ge=1, description="Most independent answers (n) per request.")
    proposal_temperature: float = Field(0.7, ge=0, le=2, description="Temperature of proposals and intermediate rounds.")
    proposal_top_p: float = Field(0.95, gt=0, le=1, description="top_p of proposals and intermediate rounds.")
    proposal_max_tokens: int = Field(4096, gt=0, description="Token limit of each proposal / intermediate aggregation.")
    temperature: float = Field(0.7, ge=0, le=2, description="Temperature of the final answer when the request does not say.")
    top_p: float = Field(1.0, gt=0, le=1, description="top_p of the final answer when the request does not say.")
    max_tokens: int | None = Field(None, gt=0, description="Token limit of the final answer when the request does not say (default: what fits).")
    early_exit: float | None = Field(None, gt=0, le=1, description="Stop after a round whose drafts agree when a request does not set aft.early_exit: the share of the N drafts that must be identical after whitespace normalisation (all, or a number in (0, 1]); the agreed draft is the answer. Default: off.")
    reasoning_default: bool = Field(False, description="Stream every round's drafts as reasoning before the answer when a request does not set aft.reasoning.")
    aggregation_format: AggregationFormat = Field(AggregationFormat.PAPER, description="Layout of the aggregation prompts, as the aggregator was trained: paper (the drafts in the system message, before the conversation: the released checkpoints) or conversation-first (the conversation first, the drafts in a user message after it, so each round reuses its cached prefix). Default: the checkpoint's aft.json format, else paper.")
    min_draft_tokens: int = Field(32, gt=0, description="Shortest drafts worth aggregating: a request whose conversation leaves less room for each draft in the context is refused (400).")

    # vLLM engine (in-process backend).
    tensor_parallel_size: int = Field(1, ge=1, description="vllm: GPUs to shard each layer over.")
    pipeline_parallel_size: int = Field(1, ge=1, description="vllm: pipeline stages.")
    max_model_len: int | None = Field(None, gt=0, description="vllm: context length (default: the model's).")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="vllm: fraction of GPU memory for weights and KV cache.")
    dtype: str = Field("auto", description="vllm: weight dtype (auto, bfloat16, float16, float32).")
    enable_prefix_caching: bool = Field(True, description="vllm: reuse KV cache across requests sharing a prefix.")
    max_num_seqs: int | None = Field(None, gt=0, description="vllm: most sequences batched at once.")
    seed: int | None = Field(None, description="vllm: engine seed.")
    trust_remote_code: bool = Field(False, description="vllm: allow model code from the checkpoint.")

    # Tool calling (both backends).
    enable_auto_tool_choice: bool = Field(False, description="Parse tool calls out of final answers, as `vllm serve --enable-auto-tool-choice` does: tool_choice auto is honoured. openai backend: the upstream must run with --enable-auto-tool-choice and a --tool-call-parser. Off: requests with tools and tool_choice auto are answered with text; required and named functions need no flag (the call is constrained to the tools' JSON schema).")
    tool_call_parser: str | None = Field(None, description="vllm backend: vLLM's tool-call parser for the model (hermes, llama3_json, mistral, pythonic, ...), as `vllm serve --tool-call-parser`.")

    log_level: str = Field("info", description="Log level (debug, info, warning, error).")
    log_format: Literal["text", "json"] = Field("text", description="Log lines as text, or one JSON object per line (for log shippers).")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        # AFT_API_KEYS=key1,key2 in the environment; a list from flags or code.
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("early_exit", mode="before")
    @classmethod
    def _all_agree(cls, value: object) -> object:
        return 1.0 if value == "all" else value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.backend == "vllm" and not self.model:
            raise ValueError("the vllm backend needs --model (AFT_MODEL): a checkpoint path or hub id")
        if self.backend == "openai" and not self.upstream_url:
            raise ValueError("the openai backend needs --upstream-url (AFT_UPSTREAM_URL)")
        if self.backend == "vllm" and self.enable_auto_tool_choice and not self.tool_call_parser:
            raise ValueError("--enable-auto-tool-choice needs --tool-call-parser NAME (AFT_TOOL_CALL_PARSER) "
                             "on the vllm backend")
        if self.default_proposals > self.max_proposals:
            raise ValueError("default_proposals exceeds max_proposals")
        if self.default_rounds > self.max_rounds:
            raise ValueError("default_rounds exceeds max_rounds")
        return self

    @property
    def model_id(self) -> str:
        """The id clients use for this service's model."""
        return self.served_model_name or self.model or "aft"


def with_manifest_defaults(settings: Settings) -> Settings:
    """Settings whose defaults come from the checkpoint's aft.json, when --model is a directory with one.

    Precedence: flags > AFT_* variables > aft.json > built-in defaults (a field set by a flag
    or variable is in `model_fields_set` and keeps its value). Raises ManifestError (and
    UnknownFormatVersion) for an unusable manifest, pydantic's ValidationError when a
    recommendation breaks a bound (e.g. proposals above --max-proposals).
    """
    if settings.backend != "vllm" or not settings.model or not Path(settings.model).is_dir():
        return settings
    manifest = read_manifest(settings.model)
    if manifest is None:
        return settings
    defaults: dict[str, Any] = {_RECOMMENDED_FIELDS[name]: value for name, value in manifest.recommended.as_dict().items()
                                if _RECOMMENDED_FIELDS[name] not in settings.model_fields_set}
    if "aggregation_format" in settings.model_fields_set:
        if settings.aggregation_format != manifest.format:
            logger.warning("--aggregation-format %s overrides aft.json's format %s, which the checkpoint was "
                           "trained on", settings.aggregation_format, manifest.format)
    elif manifest.format != settings.aggregation_format:
        defaults["aggregation_format"] = manifest.format
    logger.info("aft.json (format %d, %s): defaults %s", manifest.format_version, manifest.format,
                defaults or "none")
    if not defaults:
        return settings
    values: dict[str, Any] = {**settings.model_dump(include=settings.model_fields_set), **defaults}
    return Settings(**values)
