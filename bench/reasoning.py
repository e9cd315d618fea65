"""First visible token with drafts as reasoning on and off, on the stub upstream.

    python -m bench.reasoning [--requests 20] [--ttft-ms 50] [--tpot-ms 10] [--tokens 64]

Starts the stub and the service in front of it (as bench.run does), sends streamed requests one at
a time (N = 5, two rounds; plain generation for reference) and prints, per mode, the median and
p90 time from sending a request to its first chunk with visible text (`content` or `reasoning`),
and to the first `content`, in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.run import servers

MODES: dict[str, dict[str, Any]] = {
    "plain generation (rounds 0)": {"rounds": 0},
    "N=5, rounds=2, reasoning off": {"proposals": 5, "rounds": 2, "reasoning": False},
    "N=5, rounds=2, reasoning on": {"proposals": 5, "rounds": 2, "reasoning": True},
}


async def one(client: httpx.AsyncClient, aft: dict[str, Any]) -> tuple[float, float]:
    """(seconds to the first visible text, seconds to the first content) of one streamed answer."""
    body = {"model": "aft", "stream": True, "aft": aft, "messages": [{"role": "user", "content": "What is 2+2?"}]}
    start = time.perf_counter()
    visible = content = None
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            choices = json.loads(line[len("data: "):]).get("choices") or [{}]
            delta = choices[0].get("delta", {})
            now = time.perf_counter() - start
            if visible is None and (delta.get("content") or delta.get("reasoning")):
                visible = now
            if content is None and delta.get("content"):
                content = now
    assert visible is not None and content is not None
    return visible, content


async def main_async(args: argparse.Namespace) -> None:
    timing = {"ttft_ms": args.ttft_ms, "tpot_ms": args.tpot_ms, "tokens": args.tokens}
    with tempfile.TemporaryDirectory() as logs, servers(Path(logs), timing) as (_, port, _watch, _stub):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            print(f"stub: ttft {args.ttft_ms} ms, {args.tpot_ms} ms/token, {args.tokens} tokens; "
                  f"{args.requests} streamed requests per mode, one at a time")
            print("| mode | first visible token p50 / p90 (ms) | first content p50 (ms) |")
            print("| --- | --- | --- |")
            for name, aft in MODES.items():
                await one(client, aft)  # warm-up
                times = [await one(client, aft) for _ in range(args.requests)]
                visible = sorted(t[0] * 1000 for t in times)
                content = [t[1] * 1000 for t in times]
                p90 = visible[min(len(visible) - 1, int(0.9 * len(visible)))]
                print(f"| {name} | {statistics.median(visible):.1f} / {p90:.1f} | "
                      f"{statistics.median(content):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--ttft-ms", type=float, default=50.0)
    parser.add_argument("--tpot-ms", type=float, default=10.0)
    parser.add_argument("--tokens", type=int, default=64)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
