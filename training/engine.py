"""The in-process vLLM engine of the training commands: its flags, its config, and a checkpoint check.

`aft data on-policy` and `aft eval` load checkpoints on serving/backends/vllm.py's engine and
take the same engine flags, so a checkpoint is loaded the same way wherever it is sampled.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils._validators import validate_repo_id

from serving.backends.vllm_engine import EngineConfig


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """The engine flags (vllm's names): --max-model-len, --dtype, --gpu-memory-utilization, ..."""
    group = parser.add_argument_group("engine (vllm)")
    group.add_argument("--max-model-len", type=int, help="vllm: context length (default: the model's).")
    group.add_argument("--dtype", default="auto", help="vllm: weight dtype (auto, bfloat16, float16, float32).")
    group.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="vllm: fraction of GPU memory.")
    group.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm: GPUs per model.")
    group.add_argument("--max-num-seqs", type=int, help="vllm: most sequences batched at once (default: vllm's).")
    group.add_argument("--trust-remote-code", action="store_true", help="vllm: allow model code from the checkpoint.")


def engine_config(args: argparse.Namespace, model: str, *, tokenizer: str | None = None,
                  seed: int | None = None) -> EngineConfig:
    """The engine for `model` as the flags of `add_engine_arguments` ask."""
    return EngineConfig(model=model, tokenizer=tokenizer, max_model_len=args.max_model_len, dtype=args.dtype,
                        gpu_memory_utilization=args.gpu_memory_utilization,
                        tensor_parallel_size=args.tensor_parallel_size, max_num_seqs=args.max_num_seqs,
                        trust_remote_code=args.trust_remote_code, seed=seed)


def checkpoint_problem(model: str) -> str | None:
    """Why `model` cannot be a checkpoint, or None: a local directory with config.json, or a hub id.

    Checked before any engine starts, so that a mistyped path is one line rather than the
    traceback of vLLM's model config after another engine has already run. A name that is
    not a local path counts as a hub id (org/name, or a bare legacy name) unless its first
    part is a local directory: then it was meant as a path. A hub id must resolve
    (`hub_problem`): a mistyped parent directory looks like one.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        return None if (path / "config.json").is_file() else f"{model}: not a checkpoint (no config.json in it)"
    if path.exists():
        return f"{model}: not a checkpoint directory"
    try:
        validate_repo_id(model)
    except HFValidationError:
        return f"{model}: no such checkpoint directory"
    if model.startswith((".", "~")) or model.count("/") > 1 or (path.parent != Path(".") and path.parent.is_dir()):
        return f"{model}: no such checkpoint directory"
    return hub_problem(model)


def hub_problem(model: str) -> str | None:
    """Why the hub id `model` cannot be loaded, or None: its config.json comes from the hub or the local
    cache (where vLLM would take it from; the file is small and the engine needs it anyway)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    # The hub client logs every retry of an unreachable hub; the outcome is the one line returned here.
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        hf_hub_download(model, "config.json")
    except GatedRepoError:
        return f"{model}: a gated model on the hub; log in (hf auth login) with an account that has access"
    except RepositoryNotFoundError:
        return f"{model}: no such checkpoint directory, nor a model on the hub (or a private one)"
    except LocalEntryNotFoundError:
        return f"{model}: no such checkpoint directory, and the hub is unreachable with no copy in its cache"
    except OSError as exc:  # HTTP errors of the hub, a model without config.json, a full disk
        return f"{model}: not loadable from the hub ({type(exc).__name__}: {exc})"
    finally:
        hub_logger.setLevel(level)
    return None
