"""A/B two versions of the service side by side on one stub, where one run's noise is larger than most changes.

    git worktree add /tmp/base HEAD~1
    python -m bench.ab /tmp/base [--rounds 8] [--answers 80] [--stream] [--proposals 5 --aggregations 2]
    python -m bench.ab /tmp/base --concurrency 64 [--seconds 4] [--proposals 3]   # CPU per answer under load
    python -m bench.ab /tmp/base --context 4096   # the stub serves /tokenize: the context budget is on

A is the service from the other checkout, B the one from this checkout; both run side by side
on one stub. At concurrency 1 one client asks A, B and the stub directly (the ideal) in a shuffled
order, one answer at a time; at a higher concurrency, A and B take turns (in alternating order)
under the same closed-loop load. Each round starts fresh processes (the same code differs by
~0.1-0.3 ms from one process to the next: memory layout, hash seeds), and the report is the mean
over rounds of each one's median overhead over the ideal (concurrency 1) and of its CPU time per
answer (user + system), with the spread of the round differences. An A/A run (the same checkout
twice) shows the noise floor: 8 rounds of 80 gave +32 µs, sd 133.
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
from bench.loadgen import direct_answer, run_load, service_answer
from bench.procstats import ProcessWatch
from bench.run import TIMING, gateway_command, stub_command
from scripts.launch import free_port, running

ROOT = Path(__file__).resolve().parent.parent


async def _round(stub_port: int, ports: dict[str, int], watches: dict[str, ProcessWatch], answers: int,
                 proposals: int, rounds: int, stream: bool) -> dict[str, float]:
    """Median overhead over the ideal (µs) of A and B in one round, and their CPU µs per answer."""
    service, ideal = service_answer(proposals, rounds, stream), direct_answer(proposals, rounds, stream)
    calls = [(name, Connection(port), service) for name, port in ports.items()]
    calls.append(("ideal", Connection(stub_port), ideal))
    latencies: dict[str, list[float]] = {name: [] for name, _, _ in calls}
    cpu: dict[str, float] = {}
    for i in range(answers + 5):  # the first five warm connections and pools up
        if i == 5:
            cpu = {name: watch.cpu_seconds() for name, watch in watches.items()}
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
    result = {name: statistics.median(latencies[name]) - ideal_p50 for name in ports}
    for name, watch in watches.items():
        result[f"{name} cpu"] = (watch.cpu_seconds() - cpu[name]) / answers * 1e6
    return result


async def _loaded_round(ports: dict[str, int], watches: dict[str, ProcessWatch], order: list[str], concurrency: int,
                        seconds: float, proposals: int, rounds: int, stream: bool) -> dict[str, float]:
    """A and B in turn under `concurrency` closed-loop clients: CPU µs per answer and answers/s."""
    client = service_answer(proposals, rounds, stream)
    result: dict[str, float] = {}
    for name in order:
        connections = [Connection(ports[name]) for _ in range(concurrency)]
        await run_load(client, connections, requests=10**6, seconds=1.0)  # warm connections and pools
        cpu = watches[name].cpu_seconds()
        outcomes, wall = await run_load(client, connections, requests=10**6, seconds=seconds)
        for connection in connections:
            connection.close()
        assert all(o.ok for o in outcomes), f"{name}: {next(o.error for o in outcomes if not o.ok)}"
        result[f"{name} cpu"] = (watches[name].cpu_seconds() - cpu) / len(outcomes) * 1e6
        result[f"{name} answers/s"] = len(outcomes) / wall
    return result


def _line(result: dict[str, float]) -> str:
    parts = []
    if "A" in result:
        parts.append(f"overhead p50 A {result['A']:.0f} µs, B {result['B']:.0f} µs, "
                     f"B - A {result['B'] - result['A']:+.0f}")
    parts.append(f"CPU per answer A {result['A cpu']:.0f} µs, B {result['B cpu']:.0f} µs, "
                 f"B - A {result['B cpu'] - result['A cpu']:+.0f}")
    if "A answers/s" in result:
        parts.append(f"answers/s A {result['A answers/s']:.0f}, B {result['B answers/s']:.0f}")
    return "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("other", type=Path, help="checkout of version A (B is this checkout)")
    parser.add_argument("--rounds", type=int, default=8, help="rounds of fresh processes")
    parser.add_argument("--answers", type=int, default=80, help="answers each per round (concurrency 1)")
    parser.add_argument("--concurrency", type=int, default=1, help="clients; above 1, A and B take turns")
    parser.add_argument("--seconds", type=float, default=4.0, help="each one's turn per round (concurrency > 1)")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--proposals", type=int, default=5)
    parser.add_argument("--aggregations", type=int, default=2, help="the pipeline's rounds")
    parser.add_argument("--context", type=int, default=0,
                        help="the stub serves /tokenize for this context length, so the context budget is on")
    args = parser.parse_args()
    trees = {"A": args.other.resolve(), "B": ROOT}
    stub_port = free_port()
    stub = [*stub_command(stub_port, TIMING, lifetime=7200), "--context", str(args.context)]
    results: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="aft-ab-") as logs, \
            running(stub, f"http://127.0.0.1:{stub_port}/health", Path(logs) / "stub.log", timeout=30):
        for r in range(args.rounds):
            ports = {name: free_port() for name in trees}
            order = ["A", "B"] if r % 2 == 0 else ["B", "A"]  # start order (and turns under load) alternate
            watches: dict[str, ProcessWatch] = {}
            with contextlib.ExitStack() as stack:
                for name in order:
                    process = stack.enter_context(running(gateway_command(ports[name], stub_port),
                                                          f"http://127.0.0.1:{ports[name]}/health",
                                                          Path(logs) / f"{name}{r}.log", cwd=trees[name],
                                                          env={"PYTHONPATH": str(trees[name])}, timeout=60))
                    watches[name] = ProcessWatch(process.pid)
                if args.concurrency == 1:
                    result = asyncio.run(_round(stub_port, ports, watches, args.answers, args.proposals,
                                                args.aggregations, args.stream))
                else:
                    result = asyncio.run(_loaded_round(ports, watches, order, args.concurrency, args.seconds,
                                                       args.proposals, args.aggregations, args.stream))
            results.append(result)
            print(f"round {r}: {_line(result)}", flush=True)
    mean = {key: statistics.mean(result[key] for result in results) for key in results[0]}
    print(f"mean over {len(results)} rounds: {_line(mean)}")
    for key in ("", " cpu"):
        if f"A{key}" in mean and len(results) > 1:
            spread = statistics.stdev(r[f"B{key}"] - r[f"A{key}"] for r in results)
            print(f"  sd of the round differences{key or ' (overhead)'}: {spread:.0f} µs")


if __name__ == "__main__":
    main()
