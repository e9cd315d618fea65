"""The gateway benchmark on the stub upstream: the service against the ideal critical path, and
side by side with optillm's `moa`. Writes bench/results/<name>.json and .md.

    python -m bench.run [--quick] [--name stub] [--no-optillm]

Everything listens on 127.0.0.1; every server is stopped when the run ends (or fails), and
the stub also exits by itself after its lifetime.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.loadgen import direct_answer, optillm_answer, service_answer
from bench.measure import measure
from bench.procstats import ProcessWatch
from bench.report import render_stub, targets
from scripts.launch import aft_serve_command, free_port, running

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
OPTILLM = ROOT / ".venv" / "optillm" / "bin" / "optillm"


@dataclass(frozen=True)
class Plan:
    shapes: tuple[tuple[int, int], ...]
    concurrencies: tuple[int, ...]
    compare_concurrencies: tuple[int, ...]
    seconds: float
    seconds_c1: float
    requests: int = 5000
    warmup_seconds: float = 1.0


FULL = Plan(shapes=((5, 2), (3, 1)), concurrencies=(1, 16, 64, 256), compare_concurrencies=(1, 16, 64),
            seconds=6.0, seconds_c1=10.0)
QUICK = Plan(shapes=((5, 2),), concurrencies=(1, 64), compare_concurrencies=(1, 64), seconds=3.0, seconds_c1=4.0)
COMPARE_SHAPE = (3, 2)  # three sequential upstream calls per answer, like optillm's moa


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpus": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "load_avg_start": [round(x, 2) for x in os.getloadavg()]}


TIMING = {"ttft_ms": 10.0, "tpot_ms": 1.0, "tokens": 32}
"""The stub's default schedule: 10 ms to the first token, 1 ms a token, 32 tokens."""


def stub_command(port: int, timing: dict[str, float], lifetime: int = 3600) -> list[str]:
    return [sys.executable, "-m", "bench.stub", "--port", str(port), "--lifetime", str(lifetime),
            "--ttft-ms", str(timing["ttft_ms"]), "--tpot-ms", str(timing["tpot_ms"]), "--tokens", str(timing["tokens"])]


def gateway_command(port: int, stub_port: int) -> list[str]:
    """`aft serve` with the openai backend in front of the stub, serving the model as "aft"."""
    return aft_serve_command(port, "--backend", "openai", "--upstream-url", f"http://127.0.0.1:{stub_port}/v1",
                             "--model", "stub", "--served-model-name", "aft")


@contextlib.contextmanager
def servers(logs: Path, timing: dict[str, float]) -> Iterator[tuple[int, int, ProcessWatch, ProcessWatch]]:
    """The stub and the service in front of it; yields (stub port, service port, their watches)."""
    stub_port, service_port = free_port(), free_port()
    stub, service = stub_command(stub_port, timing), gateway_command(service_port, stub_port)
    with running(stub, f"http://127.0.0.1:{stub_port}/health", logs / "stub.log", timeout=30) as stub_process, \
            running(service, f"http://127.0.0.1:{service_port}/health", logs / "service.log", timeout=60) as process:
        yield stub_port, service_port, ProcessWatch(process.pid), ProcessWatch(stub_process.pid)


def with_overhead(service: dict[str, Any], direct: dict[str, Any]) -> dict[str, Any]:
    def minus(key: str) -> float | None:
        a, b = service.get(key), direct.get(key)
        return None if a is None or b is None else round(a - b, 2)

    return {**service, "ideal_p50_ms": direct["latency_p50_ms"], "ideal_p99_ms": direct["latency_p99_ms"],
            "overhead_p50_ms": minus("latency_p50_ms"), "overhead_p99_ms": minus("latency_p99_ms"),
            "ttft_overhead_p50_ms": minus("ttft_p50_ms"),
            "direct_relay_p50_ms": direct.get("relay_p50_ms"), "direct_relay_p99_ms": direct.get("relay_p99_ms")}


async def gateway_rows(plan: Plan, stub_port: int, service_port: int, watch: ProcessWatch,
                       stub_watch: ProcessWatch) -> list[dict[str, Any]]:
    rows = []
    for proposals, rounds in plan.shapes:
        for stream in (False, True):
            for concurrency in plan.concurrencies:
                seconds = plan.seconds_c1 if concurrency == 1 else plan.seconds
                common: dict[str, Any] = {"requests": plan.requests, "seconds": seconds, "stub_port": stub_port,
                                          "warmup_seconds": plan.warmup_seconds, "stub_watch": stub_watch}
                direct = await measure(direct_answer(proposals, rounds, stream), stub_port, concurrency, **common)
                service = await measure(service_answer(proposals, rounds, stream), service_port, concurrency,
                                        watch=watch, **common)
                row = {"proposals": proposals, "rounds": rounds, "stream": stream, **with_overhead(service, direct)}
                rows.append(row)
                print(f"  N={proposals} R={rounds} stream={stream!s:5} C={concurrency:3}: "
                      f"{row['answers_per_s']} answers/s, p50 {row['latency_p50_ms']} ms "
                      f"(ideal {row['ideal_p50_ms']}), cpu {row['cpu_ms_per_answer']} ms/answer, "
                      f"errors {row['errors']}, load {row['load_avg_1m']}", flush=True)
    return rows


async def comparison_rows(plan: Plan, stub_port: int, service_port: int, watch: ProcessWatch,
                          stub_watch: ProcessWatch, logs: Path, with_optillm: bool) -> list[dict[str, Any]]:
    proposals, rounds = COMPARE_SHAPE
    rows: list[dict[str, Any]] = []
    common: dict[str, Any] = {"requests": plan.requests, "stub_port": stub_port, "stub_watch": stub_watch,
              "warmup_seconds": plan.warmup_seconds}
    for concurrency in plan.compare_concurrencies:
        seconds = plan.seconds_c1 if concurrency == 1 else plan.seconds
        direct = await measure(direct_answer(proposals, rounds, False), stub_port, concurrency,
                               seconds=seconds, **common)
        service = await measure(service_answer(proposals, rounds, False), service_port, concurrency,
                                seconds=seconds, watch=watch, **common)
        rows.append({"target": "aft", "proposals": proposals, "rounds": rounds, **with_overhead(service, direct)})
        rows.append({"target": "direct", **direct})
    if not with_optillm:
        return rows
    if not OPTILLM.exists():
        print(f"  optillm is not installed at {OPTILLM} (make bench installs it); skipped", flush=True)
        return rows
    port = free_port()
    command = [str(OPTILLM), "--approach", "moa", "--base-url", f"http://127.0.0.1:{stub_port}/v1", "--port", str(port)]
    env = {"OPENAI_API_KEY": "sk-bench"}
    with running(command, f"http://127.0.0.1:{port}/health", logs / "optillm.log", env=env, timeout=180) as process:
        optillm_watch = ProcessWatch(process.pid)
        for concurrency in plan.compare_concurrencies:
            seconds = plan.seconds_c1 if concurrency == 1 else plan.seconds
            row = await measure(optillm_answer(), port, concurrency, seconds=seconds, watch=optillm_watch, **common)
            direct = next(r for r in rows if r["target"] == "direct" and r["concurrency"] == concurrency)
            rows.append({"target": "optillm", **with_overhead(row, direct)})
            print(f"  optillm moa C={concurrency:3}: {row['answers_per_s']} answers/s, p50 {row['latency_p50_ms']} ms, "
                  f"cpu {row['cpu_ms_per_answer']} ms/answer, errors {row['errors']}", flush=True)
    return rows


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    plan = QUICK if args.quick else FULL
    timing = {"ttft_ms": args.ttft_ms, "tpot_ms": args.tpot_ms, "tokens": args.tokens}
    logs = Path(tempfile.mkdtemp(prefix="aft-bench-"))
    print(f"bench: logs in {logs}", flush=True)
    result: dict[str, Any] = {"name": args.name, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                              "command": " ".join(["python -m bench.run", *sys.argv[1:]]),
                              "machine": machine(), "stub": timing, "plan": plan.__dict__}
    with servers(logs, timing) as (stub_port, service_port, watch, stub_watch):
        result["service_rss_idle_mb"] = round(watch.rss() / 2**20, 1)
        print("gateway: the service against the ideal critical path", flush=True)
        result["gateway"] = await gateway_rows(plan, stub_port, service_port, watch, stub_watch)
        print("comparison: N=3, rounds=2 against optillm moa", flush=True)
        result["comparison"] = await comparison_rows(plan, stub_port, service_port, watch, stub_watch, logs,
                                                     not args.no_optillm)
    result["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def save_results(name: str, result: dict[str, Any], markdown: str) -> None:
    """Write bench/results/NAME.json and NAME.md, and show the table."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown)
    print(f"bench: wrote {RESULTS / name}.md and .json", flush=True)
    print(markdown)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    # The load generator runs on uvloop too, so that it takes less of the CPU it shares with the service.
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small subset (about 2 minutes)")
    parser.add_argument("--name", default=None, help="results file name (default: stub, or stub-quick)")
    parser.add_argument("--no-optillm", action="store_true", help="skip the optillm side")
    parser.add_argument("--ttft-ms", type=float, default=TIMING["ttft_ms"])
    parser.add_argument("--tpot-ms", type=float, default=TIMING["tpot_ms"])
    parser.add_argument("--tokens", type=int, default=int(TIMING["tokens"]))
    parser.add_argument("--timeout", type=float, default=900.0, help="the whole run's time limit (s)")
    args = parser.parse_args()
    args.name = args.name or ("stub-quick" if args.quick else "stub")
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        result = runner.run(asyncio.wait_for(main_async(args), args.timeout))
    result["targets"] = targets(result)
    save_results(args.name, result, render_stub(result))


if __name__ == "__main__":
    main()
