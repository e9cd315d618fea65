"""A/B two versions of the service at concurrency 1, where one run's noise is larger than most changes.

    git worktree add /tmp/base HEAD~1
    python -m bench.ab /tmp/base [--rounds 8] [--answers 80] [--stream] [--proposals 5 --aggregations 2]

A is the service from the other checkout, B the one from this checkout; both run side by side
on one stub, and one client asks A, B and the stub directly (the ideal) in a shuffled order,
one answer at a time. Each round starts fresh processes (the same code differs by ~0.1-0.3 ms
from one process to the next: memory layout, hash seeds), and the report is the mean over
rounds of each one's median overhead over the ideal, with the spread of the round differences.
An A/A run (the same checkout twice) shows the noise floor: 8 rounds of 80 gave +32 µs, sd 133.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import tempfile
import time
from pathlib import Path

from bench.client import Connection
from bench.loadgen import direct_answer, service_answer
from bench.run import TIMING, gateway_command, stub_command
from scripts.launch import free_port, running

ROOT = Path(__file__).resolve().parent.parent


async def _round(stub_port: int, ports: dict[str, int], answers: int, proposals: int, rounds: int,
                 stream: bool) -> dict[str, float]:
    """Median overhead over the ideal (µs) of A and B in one round."""
    service, ideal = service_answer(proposals, rounds, stream), direct_answer(proposals, rounds, stream)
    calls = [(name, Connection(port), service) for name, port in ports.items()]
    calls.append(("ideal", Connection(stub_port), ideal))
    latencies: dict[str, list[float]] = {name: [] for name, _, _ in calls}
    for i in range(answers + 5):  # the first five warm connections and pools up
        random.shuffle(calls)
        for name, connection, call in calls:
            start = time.perf_counter()
            outcome = await call(connection)
            assert outcome.ok, f"{name}: {outcome.error}"
            if i >= 5:
                latencies[name].append((time.perf_counter() - start) * 1e6)
    for _, connection, _ in calls:
        connection.close()
    ideal_p50 = statistics.median(latencies["ideal"])
    return {name: statistics.median(latencies[name]) - ideal_p50 for name in ports}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("other", type=Path, help="checkout of version A (B is this checkout)")
    parser.add_argument("--rounds", type=int, default=8, help="rounds of fresh processes")
    parser.add_argument("--answers", type=int, default=80, help="answers each per round")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--proposals", type=int, default=5)
    parser.add_argument("--aggregations", type=int, default=2, help="the pipeline's rounds")
    args = parser.parse_args()
    trees = {"A": args.other.resolve(), "B": ROOT}
    stub_port = free_port()
    stub = stub_command(stub_port, TIMING, lifetime=7200)
    results: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="aft-ab-") as logs, \
            running(stub, f"http://127.0.0.1:{stub_port}/health", Path(logs) / "stub.log", timeout=30):
        for r in range(args.rounds):
            ports = {name: free_port() for name in trees}
            with contextlib.ExitStack() as stack:
                for name in (["A", "B"] if r % 2 == 0 else ["B", "A"]):  # start order alternates too
                    stack.enter_context(running(gateway_command(ports[name], stub_port),
                                                f"http://127.0.0.1:{ports[name]}/health",
                                                Path(logs) / f"{name}{r}.log", cwd=trees[name],
                                                env={"PYTHONPATH": str(trees[name])}, timeout=60))
                result = asyncio.run(_round(stub_port, ports, args.answers, args.proposals, args.aggregations,
                                            args.stream))
            results.append(result)
            print(f"round {r}: overhead p50 A {result['A']:.0f} µs, B {result['B']:.0f} µs, "
                  f"B - A {result['B'] - result['A']:+.0f}", flush=True)
    a, b = (statistics.mean(result[name] for result in results) for name in ("A", "B"))
    spread = statistics.stdev(r["B"] - r["A"] for r in results) if len(results) > 1 else 0.0
    print(f"mean over {len(results)} rounds: A {a:.0f} µs, B {b:.0f} µs, B - A {b - a:+.0f} µs "
          f"(sd of the round differences {spread:.0f})")


if __name__ == "__main__":
    main()
