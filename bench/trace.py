"""Where the service's overhead at concurrency 1 goes: its hops placed on the stub's clock.

    python -m bench.trace [--answers 60] [--proposals 5 --rounds 2]

One client, one answer at a time, alternately through the service and directly (the same
rounds + 1 calls made by the client itself). The stub stamps when each chat request
arrives and when its response leaves (GET /trace, CLOCK_MONOTONIC, the clock the client
stamps with too), which splits an answer into hops that exclude the stub's own time:
- in: the client sends -> the stub has the first call;
- turn r: the stub sends round r's response -> it has the next call;
- out: the stub sends the last response -> the client has the answer.
The service's hop minus the direct one is what the service adds there (medians, µs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.client import Connection, get_json_bytes
from bench.loadgen import Client, direct_answer, service_answer
from bench.run import TIMING, servers


async def _hops(call: Client, connection: Connection, stub_port: int) -> list[float]:
    await get_json_bytes(stub_port, "/trace")  # forget what came before
    start = time.monotonic_ns() // 1000
    outcome = await call(connection)
    end = time.monotonic_ns() // 1000
    assert outcome.ok, outcome.error
    stamps = [t for _, t in json.loads(await get_json_bytes(stub_port, "/trace"))]
    marks = [start, *stamps, end]  # client send, (stub in, stub out) per call, client receipt
    return [b - a for a, b in zip(marks[0::2], marks[1::2], strict=True)]


async def trace(stub_port: int, service_port: int, answers: int, proposals: int, rounds: int) -> dict[str, list[float]]:
    through, direct = Connection(service_port), Connection(stub_port)
    service, ideal = service_answer(proposals, rounds, False), direct_answer(proposals, rounds, False)
    names = ["in", *(f"turn {r}" for r in range(rounds)), "out"]
    hops: dict[str, list[float]] = {f"{path} {name}": [] for path in ("service", "direct") for name in names}
    for i in range(answers + 5):  # the first five warm connections and pools up
        for path, call, connection in (("service", service, through), ("direct", ideal, direct)):
            values = await _hops(call, connection, stub_port)
            if i >= 5:
                for name, value in zip(names, values, strict=True):
                    hops[f"{path} {name}"].append(value)
    through.close()
    direct.close()
    return hops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--answers", type=int, default=60)
    parser.add_argument("--proposals", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aft-trace-") as logs, \
            servers(Path(logs), TIMING) as (stub_port, service_port, _, _):
        hops = asyncio.run(trace(stub_port, service_port, args.answers, args.proposals, args.rounds))
    names = [key.removeprefix("service ") for key in hops if key.startswith("service ")]
    print(f"N = {args.proposals}, rounds = {args.rounds}, not streamed, {args.answers} answers each way; "
          "median µs")
    print(f"{'hop':8} {'service':>8} {'direct':>8} {'added':>8}")
    total = 0.0
    for name in names:
        service, direct = (statistics.median(hops[f"{path} {name}"]) for path in ("service", "direct"))
        total += service - direct
        print(f"{name:8} {service:8.0f} {direct:8.0f} {service - direct:8.0f}")
    print(f"{'total':8} {'':8} {'':8} {total:8.0f}")


if __name__ == "__main__":
    main()
