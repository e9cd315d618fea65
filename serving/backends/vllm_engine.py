"""The in-process engine: how it is built (the vLLM engine arguments of one EngineConfig), and what
its exceptions mean in the service's terms (engine_error).

vllm is imported lazily, as in serving/backends/vllm.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from serving.errors import AFTError, BackendError, ContextLengthExceeded, EngineDead, InvalidRequest, Overloaded

if TYPE_CHECKING:
    from vllm.engine.arg_utils import AsyncEngineArgs


@dataclass(frozen=True)
class EngineConfig:
    """How to build the engine; None leaves a field at vLLM's default."""

    model: str
    """Checkpoint path or hub id."""
    tokenizer: str | None = None
    """Tokenizer path or hub id when it differs from `model`."""
    tensor_parallel_size: int = 1
    """GPUs each layer is split across."""
    pipeline_parallel_size: int = 1
    """Pipeline stages the layers are split into."""
    max_model_len: int | None = None
    """Context length (prompt + completion); None takes the model's."""
    gpu_memory_utilization: float = 0.9
    """Fraction of accelerator memory the engine may use (weights + KV cache)."""
    dtype: str = "auto"
    """Weight and activation dtype ("auto", "bfloat16", "float32", ...)."""
    enable_prefix_caching: bool = True
    """Reuse KV blocks of shared prompt prefixes; the n samples of a layer share one prompt."""
    seed: int | None = None
    """Engine-wide random seed; per-request seeds come from Sampling.seed."""
    trust_remote_code: bool = False
    """Allow model code from the checkpoint's repository."""
    max_num_seqs: int | None = None
    """Most sequences in one batch (a request with n samples counts n)."""
    compact_json: bool = True
    """Constrained JSON (response formats, forced tool calls) has no whitespace between its tokens. With
    whitespace allowed, a model unsure of what comes next can write newlines until max_tokens, and a
    cut answer is no JSON at all: the toy checkpoint does so every time (bench/structured.py). Compact
    JSON needs vLLM's xgrammar backend (not "auto", which falls back to guidance for the schemas xgrammar
    cannot compile): those schemas are refused."""

    def to_engine_args(self) -> AsyncEngineArgs:
        """The vLLM engine arguments for this configuration."""
        from vllm.config import StructuredOutputsConfig
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.platforms import current_platform

        # A prefill split across engine steps samples a token at each partial step and throws it away;
        # vLLM then rewinds a seeded request's generator (gen.set_offset, gpu_model_runner.py), which
        # only CUDA generators support: on CPU the whole engine core dies with "CPU Generator does not
        # use offset". Any client sending `seed` while prompts exceed one step's token budget triggers
        # it, so on CPU every prompt is prefilled in one step (vLLM then raises the step's budget to
        # max_model_len, as it does for CPU models that cannot chunk).
        chunked_prefill = False if current_platform.is_cpu() else None
        optional: dict[str, Any] = {
            name: value for name, value in (
                ("seed", self.seed), ("max_model_len", self.max_model_len),
                ("max_num_seqs", self.max_num_seqs), ("enable_chunked_prefill", chunked_prefill),
            ) if value is not None
        }
        return AsyncEngineArgs(
            model=self.model, tokenizer=self.tokenizer, tensor_parallel_size=self.tensor_parallel_size,
            pipeline_parallel_size=self.pipeline_parallel_size,
            gpu_memory_utilization=self.gpu_memory_utilization, dtype=self.dtype,  # type: ignore[arg-type]
            enable_prefix_caching=self.enable_prefix_caching, trust_remote_code=self.trust_remote_code,
            # vLLM allows compact JSON only with a named grammar backend: xgrammar, its default choice.
            structured_outputs_config=StructuredOutputsConfig(backend="xgrammar", disable_any_whitespace=True)
            if self.compact_json else StructuredOutputsConfig(),
            **optional,
        )


def engine_error(exc: Exception) -> AFTError:
    """Translate an engine exception into the service's domain error."""
    from vllm.exceptions import GracefulHTTPError, VLLMClientError
    from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError

    if isinstance(exc, AFTError):
        return exc
    if isinstance(exc, EngineDeadError):  # the engine core process is gone: only a restart helps
        return EngineDead("the engine died; the service is restarting", code="engine_dead",
                          detail=f"vLLM engine is dead: {exc}")
    if isinstance(exc, GracefulHTTPError):  # admission control (queue full): retry later
        return Overloaded(exc.message) if exc.http_status == 503 else BackendError(exc.message)
    # AsyncLLM.generate wraps unexpected exceptions, a plain ValueError from validation included.
    cause = exc.__cause__ if isinstance(exc, EngineGenerateError) else exc
    if isinstance(cause, VLLMClientError | ValueError):
        message = str(cause)
        if "maximum model length" in message:
            return ContextLengthExceeded(message)
        return InvalidRequest(message, param=getattr(cause, "parameter", None))
    return BackendError(f"vLLM engine failed: {type(exc).__name__}: {exc}")
