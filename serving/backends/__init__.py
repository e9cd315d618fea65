"""Backends: where generations come from (vLLM in process, or OpenAI-compatible upstreams)."""

from serving.backends.base import Backend, Completion, Generation, Role, Sampling, StreamDelta, Usage

__all__ = ["Backend", "Completion", "Generation", "Role", "Sampling", "StreamDelta", "Usage"]
