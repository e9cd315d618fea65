"""`make demo`: serve the embedded default model with propose-and-aggregate on real vLLM and
ask it one question over the OpenAI SDK, streaming: the proposals of every round, then the answer.
With --serve (`make playground`) the server stays up, with its playground page, until Ctrl-C.

The embedded default is the toy AFT model (training/toy.py): a tiny Llama trained from
scratch to multiply 8-digit numbers by one digit, then aggregation fine-tuned on drafts (its
own and slipped copies of the answer). The repository ships it in checkpoints/toy (`make toy`
rebuilds it into models/toy, `make toy-ship` copies that over the shipped one); its drafts
slip on a digit here and there, and the aggregation reads them digit by digit.

`make demo MODEL=models/smollm2-135m-instruct` (after `make smollm2`) shows a real chat model
instead: SmolLM2-135M-Instruct, not aggregation fine-tuned, asked a general question with the
service's N and rounds (docs/results.md says what to expect of it). Point --model at an AFT
checkpoint on a GPU host for a real AFT model.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import openai

from scripts.launch import CPU_ENGINE_ENV, CPU_ENGINE_FLAGS, aft_serve_command, free_port, running
from serving.manifest import read_manifest

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_MODEL = ROOT / "checkpoints" / "toy"
TOY_QUESTION = "What is 31415926 × 3?"
CHAT_QUESTION = "What is the capital of France? Answer in one sentence."
"""The question for any other model: a real chat model is asked something it can answer."""
CHAT_TOKENS = "96"
"""Drafts and answer of a real chat model: a few sentences, so a demo on two cores stays under a minute."""


def is_toy(model: Path) -> bool:
    return model.resolve() == SHIPPED_MODEL.resolve()


def serve_command(model: Path, port: int) -> list[str]:
    """`aft serve` as the demo runs it: `model` on the in-process CPU engine, served as "aft"; the
    checkpoint's aft.json gives the sampling defaults. The toy gets the tiny-model engine flags (its
    answers are a few tokens); any other model its own context length and dtype."""
    if is_toy(model):
        return aft_serve_command(port, "--backend", "vllm", "--model", str(model), "--served-model-name", "aft",
                                 *CPU_ENGINE_FLAGS, "--max-tokens", "48", "--proposal-max-tokens", "48")
    return aft_serve_command(port, "--backend", "vllm", "--model", str(model), "--served-model-name", "aft",
                             "--max-tokens", CHAT_TOKENS, "--proposal-max-tokens", CHAT_TOKENS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL,
                        help="checkpoint to serve (default: the shipped toy AFT model, checkpoints/toy)")
    parser.add_argument("--question", help=f"default: {TOY_QUESTION!r} for the toy, else {CHAT_QUESTION!r}")
    parser.add_argument("--proposals", type=int, help="N (default: the checkpoint's aft.json, else the server's 5)")
    parser.add_argument("--rounds", type=int, help="rounds (default: the checkpoint's aft.json, else the server's 2)")
    parser.add_argument("--serve", action="store_true",
                        help="keep the server up after the answer, with its playground page, until Ctrl-C")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    args = parser.parse_args()

    model: Path = args.model
    question: str = args.question or (TOY_QUESTION if is_toy(model) else CHAT_QUESTION)
    manifest = read_manifest(model) if model.is_dir() else None
    advice = manifest.recommended.as_dict() if manifest else {}
    proposals = args.proposals if args.proposals is not None else int(advice.get("proposals", 5))
    rounds = args.rounds if args.rounds is not None else int(advice.get("rounds", 2))
    port = args.port or free_port()
    log = ROOT / "models" / "demo-server.log"
    print(f"starting aft serve on 127.0.0.1:{port} with {model} (log: {log}) ...", flush=True)
    started = time.monotonic()
    # A real model's engine compiles for minutes on two busy cores (SmolLM2: 3 idle, over 5 loaded).
    start_limit = 300 if is_toy(model) else 1800
    with running(serve_command(model, port), f"http://127.0.0.1:{port}/health", log, env=CPU_ENGINE_ENV,
                 timeout=start_limit) as server:
        print(f"ready in {time.monotonic() - started:.0f} s\n")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
        print(f"Q: {question}  (N={proposals}, rounds={rounds})\n")
        stream = client.chat.completions.create(
            model="aft", messages=[{"role": "user", "content": question}], stream=True,
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
        if not args.serve:
            print("\n`make playground` (or --serve) keeps the server up with its playground page, /playground")
            return 0
        print(f"\nplayground: http://127.0.0.1:{port}/playground  (API: http://127.0.0.1:{port}/v1; "
              "Ctrl-C stops the server)", flush=True)
        try:
            server.wait()
        except KeyboardInterrupt:  # how a person ends --serve; leaving the block stops the server
            print("\nstopping the server ...", flush=True)
            return 0
        print(f"the server exited with {server.returncode}; log: {log}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
