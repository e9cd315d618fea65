"""`make demo`: serve the embedded default model with propose-and-aggregate on real vLLM and
ask it one question over the OpenAI SDK, streaming: the proposals of every round, then the answer.

The embedded default is the toy AFT model (training/toy.py): a tiny Llama trained from
scratch on this machine to multiply 8-digit numbers by one digit, then aggregation fine-tuned
on drafts (its own and slipped copies of the answer). It is built on first use (about twelve
minutes on two CPU cores) and cached in models/toy; its drafts slip on a digit here and there,
and the aggregation reads them digit by digit. Point --model at an AFT checkpoint on a GPU host for a real model.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import openai

from scripts.launch import CPU_ENGINE_ENV, CPU_ENGINE_FLAGS, aft_serve_command, free_port, running
from serving.manifest import read_manifest
from training.toy import run_recipe

ROOT = Path(__file__).resolve().parent.parent


def _toy_model(path: Path) -> Path:
    if (path / "aft.json").is_file():
        return path
    print(f"building the toy AFT model into {path} (first use only; about twelve minutes on two cores) ...",
          flush=True)
    os.environ.update(CPU_ENGINE_ENV)  # the recipe drafts its training proposals on an in-process engine
    return run_recipe(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", help="checkpoint to serve (default: the embedded toy AFT model)")
    parser.add_argument("--question", default="What is 31415926 × 3?")
    parser.add_argument("--proposals", type=int, help="N (default: the checkpoint's aft.json, else the server's 5)")
    parser.add_argument("--rounds", type=int, help="rounds (default: the checkpoint's aft.json, else the server's 2)")
    args = parser.parse_args()

    model = Path(args.model) if args.model else _toy_model(ROOT / "models" / "toy")
    manifest = read_manifest(model) if model.is_dir() else None
    advice = manifest.recommended.as_dict() if manifest else {}
    proposals = args.proposals if args.proposals is not None else int(advice.get("proposals", 5))
    rounds = args.rounds if args.rounds is not None else int(advice.get("rounds", 2))
    port = free_port()
    log = ROOT / "models" / "demo-server.log"
    print(f"starting aft serve on 127.0.0.1:{port} with {model} (log: {log}) ...", flush=True)
    started = time.monotonic()
    command = aft_serve_command(port, "--backend", "vllm", "--model", str(model), "--served-model-name", "aft",
                                *CPU_ENGINE_FLAGS, "--max-tokens", "48", "--proposal-max-tokens", "48")
    with running(command, f"http://127.0.0.1:{port}/health", log, env=CPU_ENGINE_ENV):
        print(f"ready in {time.monotonic() - started:.0f} s\n")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
        print(f"Q: {args.question}  (N={proposals}, rounds={rounds})\n")
        stream = client.chat.completions.create(
            model="aft", messages=[{"role": "user", "content": args.question}], stream=True,
            stream_options={"include_usage": True},
            extra_body={"aft": {"proposals": proposals, "rounds": rounds, "include_proposals": True}})
        answering = False
        for chunk in stream:
            extra = chunk.model_extra or {}
            layer = extra.get("aft")
            if layer and "outputs" in layer:
                title = "proposals" if layer["round"] == 0 else f"aggregation round {layer['round']}"
                print(f"--- {title} ---")
                for i, text in enumerate(layer["outputs"], 1):
                    print(f"{i}. {text!r}")
            for choice in chunk.choices:
                if choice.delta.content:
                    if not answering:
                        print("--- answer (streamed) ---")
                        answering = True
                    print(choice.delta.content, end="", flush=True)
            if chunk.usage:
                print(f"\n\nusage: {chunk.usage.prompt_tokens} prompt + {chunk.usage.completion_tokens} "
                      f"completion tokens over {rounds + 1} engine requests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
