"""One measured configuration: warm up, reset the counters, run the load, read every counter back."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from bench.client import Connection, get_json_bytes
from bench.loadgen import Client, Outcome, percentile, run_load
from bench.procstats import ProcessWatch, self_cpu_seconds


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _stats(outcomes: list[Outcome]) -> dict[str, Any]:
    ok = [o for o in outcomes if o.ok]
    latency = [o.latency for o in ok]
    ttft = [o.ttft for o in ok if o.ttft is not None]
    relay = [r / 1000 for o in ok for r in o.relay_us]
    tokens = [o.completion_tokens for o in ok if o.completion_tokens is not None]
    final = [o.final_tokens for o in ok if o.final_tokens is not None]
    errors = [o.error for o in outcomes if not o.ok]
    return {
        "answers": len(ok), "errors": len(errors), "first_error": errors[0] if errors else None,
        "latency_p50_ms": _ms(percentile(latency, 50)), "latency_p99_ms": _ms(percentile(latency, 99)),
        "ttft_p50_ms": _ms(percentile(ttft, 50)), "ttft_p99_ms": _ms(percentile(ttft, 99)),
        "relay_p50_ms": _round(percentile(relay, 50)), "relay_p99_ms": _round(percentile(relay, 99)),
        "completion_tokens_mean": round(sum(tokens) / len(tokens), 1) if tokens else None,
        "final_tokens_mean": round(sum(final) / len(final), 1) if final else None,
    }


async def measure(client: Client, port: int, concurrency: int, *, requests: int, seconds: float,
                  warmup_seconds: float, watch: ProcessWatch | None = None, stub_port: int | None = None,
                  stub_watch: ProcessWatch | None = None) -> dict[str, Any]:
    """Warm up (connections open, pools filled), then measure `concurrency` closed-loop clients."""
    connections = [Connection(port) for _ in range(concurrency)]
    try:
        await run_load(client, connections, requests=2 * concurrency, seconds=warmup_seconds)
        if stub_port is not None:
            await get_json_bytes(stub_port, "/stats/reset", "POST")
        load_before = os.getloadavg()[0]
        cpu_before = watch.cpu_seconds() if watch else 0.0
        tree_before = watch.tree_cpu_seconds() if watch and watch.tree else 0.0
        stub_cpu_before = stub_watch.cpu_seconds() if stub_watch else 0.0
        own_cpu_before = self_cpu_seconds()
        if watch:
            watch.reset_peak()
            watch.start_sampling()
        try:
            outcomes, wall = await run_load(client, connections, requests=requests, seconds=seconds)
        finally:
            if watch:
                await watch.stop_sampling()
        cpu = watch.cpu_seconds() - cpu_before if watch else None
        tree_cpu = watch.tree_cpu_seconds() - tree_before if watch and watch.tree else None
        stub_cpu = stub_watch.cpu_seconds() - stub_cpu_before if stub_watch else None
        own_cpu = self_cpu_seconds() - own_cpu_before
        upstream = json.loads(await get_json_bytes(stub_port, "/stats")) if stub_port is not None else None
    finally:
        for connection in connections:
            connection.close()
    row = _stats(outcomes)
    answers = row["answers"] or 1
    row.update({
        "concurrency": concurrency, "wall_s": round(wall, 2), "answers_per_s": round(row["answers"] / wall, 1),
        "cpu_ms_per_answer": round(cpu * 1000 / answers, 3) if cpu is not None else None,
        "cpu_share": round(cpu / wall, 2) if cpu is not None else None,
        "tree_cpu_ms_per_answer": round(tree_cpu * 1000 / answers, 2) if tree_cpu is not None else None,
        "peak_rss_mb": round(watch.peak_rss() / 2**20, 1) if watch else None,
        "stub_cpu_ms_per_answer": round(stub_cpu * 1000 / answers, 3) if stub_cpu is not None else None,
        "loadgen_cpu_ms_per_answer": round(own_cpu * 1000 / answers, 3),
        "load_avg_1m": round(load_before, 2),
        "time": time.strftime("%H:%M:%S"),
    })
    if upstream is not None:
        row.update({"upstream_requests_per_answer": round(upstream["chat_requests"] / answers, 3),
                    "upstream_peak_connections": upstream["peak_open_connections"],
                    "upstream_cancelled": upstream["cancelled"],
                    "upstream_new_connections": upstream["connections"]})
    return row
