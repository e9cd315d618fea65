"""Build the configured backend from settings (imports the engine only when it is used)."""

from __future__ import annotations

from app.settings import Settings
from serving.backends.base import Backend


def build_backend(settings: Settings) -> Backend:
    if settings.backend == "vllm":
        from serving.backends.vllm import VLLMBackend
        from serving.backends.vllm_engine import EngineConfig

        assert settings.model is not None  # Settings validation guarantees it
        backend: Backend = VLLMBackend(EngineConfig(
            model=settings.model,
            tensor_parallel_size=settings.tensor_parallel_size,
            pipeline_parallel_size=settings.pipeline_parallel_size,
            max_model_len=settings.max_model_len,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            dtype=settings.dtype,
            enable_prefix_caching=settings.enable_prefix_caching,
            seed=settings.seed,
            trust_remote_code=settings.trust_remote_code,
            max_num_seqs=settings.max_num_seqs,
        ), tool_call_parser=settings.tool_call_parser if settings.enable_auto_tool_choice else None)
        return backend
    from serving.backends.openai import OpenAIBackend
    from serving.backends.openai_target import Upstream

    assert settings.upstream_url is not None
    proposer = Upstream(settings.upstream_url, settings.model, settings.upstream_api_key)
    aggregator = Upstream(
        settings.aggregator_upstream_url or settings.upstream_url,
        settings.aggregator_model or settings.model,
        settings.aggregator_upstream_api_key or settings.upstream_api_key,
    )
    upstream: Backend = OpenAIBackend(proposer, aggregator, timeout=settings.upstream_timeout,
                                      connect_timeout=settings.upstream_connect_timeout,
                                      retries=settings.upstream_retries, tokenizer=settings.tokenizer,
                                      max_connections=max(64, 4 * settings.max_concurrent_requests))
    return upstream
