"""`make demo`: serve the embedded default model with propose-and-aggregate on real vLLM and
ask it one question over the OpenAI SDK, streaming: the proposals of every round, then the answer.

The embedded default is a tiny model built on this machine on first use (models/tiny):
it runs on any CPU and answers nonsense, but every step is the real service on the
real engine. Point --model at an AFT checkpoint on a GPU host for real answers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import openai
from launch import CPU_ENGINE_ENV, CPU_ENGINE_FLAGS, aft_serve_command, free_port, running

from training.tiny import build_tiny_model

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", help="checkpoint to serve (default: the embedded tiny model)")
    parser.add_argument("--question", default="What is 17 + 25? Explain briefly.")
    parser.add_argument("--proposals", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    model = Path(args.model) if args.model else build_tiny_model(ROOT / "models" / "tiny")
    port = free_port()
    log = ROOT / "models" / "demo-server.log"
    print(f"starting aft serve on 127.0.0.1:{port} with {model} (log: {log}) ...", flush=True)
    started = time.monotonic()
    command = aft_serve_command(port, "--backend", "vllm", "--model", str(model), "--served-model-name", "aft",
                                *CPU_ENGINE_FLAGS, "--max-tokens", "48", "--proposal-max-tokens", "48")
    with running(command, f"http://127.0.0.1:{port}/health", log, env=CPU_ENGINE_ENV):
        print(f"ready in {time.monotonic() - started:.0f} s\n")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
        print(f"Q: {args.question}  (N={args.proposals}, rounds={args.rounds})\n")
        stream = client.chat.completions.create(
            model="aft", messages=[{"role": "user", "content": args.question}], stream=True,
            stream_options={"include_usage": True},
            extra_body={"aft": {"proposals": args.proposals, "rounds": args.rounds, "include_proposals": True}})
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
                      f"completion tokens over {args.rounds + 1} engine requests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
