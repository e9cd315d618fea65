"""A bounded soak: the service (`aft serve --backend openai`) in front of the stub upstream, clients
sending chat requests (streamed and not) for a fixed time, with faults mixed in.

    python -m bench.soak [--duration 60] [--clients 32]      (make soak)

Faults: the stub answers every k-th upstream call with a 5xx, drops it, cuts it halfway, slows it,
or closes its connection after it (bench/stub.py); and, in turn every --fault-interval seconds,
the stub is killed and started again, or the service gets SIGTERM while requests are in flight
and is started again once it has exited.

Each request ends as one of (bench/soak_client.py): answered; a clean error (an OpenAI error body,
or an error event followed by [DONE]); refused (no connection while the service was down, counted
apart); lost (the connection ended without an answer or an error, or was refused while the service
was up); hung (no end within --request-timeout); unclean (neither an answer nor a clean error).
The exit status is 1 when any request was lost, hung or unclean, or a restart went wrong.
Everything listens on 127.0.0.1, and the run stops by itself: the clients after --duration, the
whole run within a bound printed at the start.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.restartable import Restartable
from bench.run import TIMING, gateway_command, machine, save_results, stub_command
from bench.soak_client import Outcome, chat_request, send
from bench.soak_report import render, summarize
from scripts.launch import free_port

FAULTS = {"error": 23, "drop": 29, "cut": 31, "slow": 37, "close": 19}
"""The stub's default faults: every k-th upstream call (bench/stub.py's Faults)."""


@dataclass
class Soak:
    args: argparse.Namespace
    service: Restartable
    stub: Restartable
    stub_url: str
    start: float = field(default_factory=time.monotonic)
    service_state: str = "starting"
    upstream_state: str = "up"
    in_flight: int = 0
    sent: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    rss: list[tuple[float, int, float]] = field(default_factory=list)
    """(seconds, service pid, RSS in MB) every --rss-interval seconds."""
    upstream_faults: collections.Counter[str] = field(default_factory=collections.Counter)
    problems: list[str] = field(default_factory=list)

    def now(self) -> float:
        return round(time.monotonic() - self.start, 2)

    async def collect_stub_faults(self) -> None:
        """Add the running stub's fault counters to the total (before it is killed or at the end)."""
        with contextlib.suppress(httpx.HTTPError, ValueError):
            async with httpx.AsyncClient(timeout=2) as client:
                self.upstream_faults.update((await client.get(f"{self.stub_url}/stats")).json()["faults"])


async def run_client(soak: Soak, client: httpx.AsyncClient, url: str, index: int, end: float) -> None:
    rng = random.Random(soak.args.seed * 1000 + index)
    while time.monotonic() < end and soak.sent < soak.args.max_requests:
        soak.sent += 1
        before, upstream_before = soak.service_state, soak.upstream_state
        soak.in_flight += 1
        try:
            outcome = await send(client, url, chat_request(rng, soak.sent), soak.args.request_timeout, soak.now())
        finally:
            soak.in_flight -= 1
        outcome.service = before if before == soak.service_state else f"{before}->{soak.service_state}"
        outcome.upstream = (upstream_before if upstream_before == soak.upstream_state
                            else f"{upstream_before}->{soak.upstream_state}")
        if outcome.kind == "refused" and outcome.service == "up":
            outcome.kind, outcome.detail = "lost", "connection refused while the service was up"
        soak.outcomes.append(outcome)
        if outcome.kind != "answered":
            # As a client backs off after an error (the OpenAI SDK waits longer); without it, requests failing
            # in a millisecond while a server is down would outnumber everything else.
            await asyncio.sleep(soak.args.error_pause)


async def restart_upstream(soak: Soak, event: dict[str, Any]) -> None:
    await soak.collect_stub_faults()
    soak.upstream_state = "down"
    await soak.stub.kill()
    await asyncio.sleep(soak.args.upstream_down)
    event["start_s"] = round(await soak.stub.start(timeout=30), 2)
    soak.upstream_state = "up"


async def stop_service(soak: Soak, event: dict[str, Any]) -> None:
    """SIGTERM the service and wait for it to exit; a problem unless it exits 0 in time."""
    code, took = await soak.service.terminate(soak.args.shutdown_wait)
    soak.service_state = "down"
    event.update(exit_code=code, exit_s=round(took, 2))
    if code is None:
        soak.problems.append(f"t={event['t']}: the service had not exited {soak.args.shutdown_wait:.0f} s "
                             "after SIGTERM (killed)")
    elif code != 0:
        soak.problems.append(f"t={event['t']}: the service exited with {code} after SIGTERM "
                             f"({'killed by the signal' if code < 0 else 'an error'})")


async def restart_service(soak: Soak, event: dict[str, Any]) -> None:
    soak.service_state = "stopping"
    await stop_service(soak, event)
    soak.service_state = "starting"
    event["start_s"] = round(await soak.service.start(timeout=60), 2)
    soak.service_state = "up"


async def inject_faults(soak: Soak, end: float) -> None:
    """Restart the upstream or the service (--restarts), every --fault-interval seconds until near the end."""
    kinds = {"both": ("upstream_restart", "service_restart"), "upstream": ("upstream_restart",),
             "service": ("service_restart",), "none": ()}[soak.args.restarts]
    if not kinds:
        return
    interval = soak.args.fault_interval or soak.args.duration / 6
    for k, kind in zip(itertools.count(1), itertools.cycle(kinds), strict=False):
        at = soak.start + k * interval
        if at > end - interval / 2:
            return
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        if time.monotonic() > end - interval / 2:  # the last restart ran late: no clients left to see this one
            return
        # Restarts are to hit requests in flight; just after the service came back, the clients may all
        # be pausing after their refused connections.
        wait_until = time.monotonic() + 1.0
        while soak.in_flight == 0 and time.monotonic() < wait_until:
            await asyncio.sleep(0.01)
        event: dict[str, Any] = {"t": soak.now(), "kind": kind, "in_flight": soak.in_flight}
        await (restart_upstream if kind == "upstream_restart" else restart_service)(soak, event)
        soak.events.append(event)


async def sample_rss(soak: Soak) -> None:
    while True:
        pid = soak.service.pid
        with contextlib.suppress(psutil.Error):
            if pid is not None and soak.service_state == "up":  # not its start-up or shutdown
                soak.rss.append((soak.now(), pid, round(psutil.Process(pid).memory_info().rss / 2**20, 1)))
        await asyncio.sleep(soak.args.rss_interval)


async def soak_run(soak: Soak) -> None:
    await soak.stub.start(timeout=30)
    await soak.service.start(timeout=60)
    soak.service_state = "up"
    soak.start = time.monotonic()
    end = soak.start + soak.args.duration
    url = soak.service.health_url.replace("/health", "/v1/chat/completions")
    sampler = asyncio.create_task(sample_rss(soak))
    # One connection per request (bench/soak_client.py says why): no keep-alive.
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=None) as client:
        faults = asyncio.create_task(inject_faults(soak, end))
        await asyncio.gather(*(run_client(soak, client, url, i, end) for i in range(soak.args.clients)))
        await faults
    sampler.cancel()
    await soak.collect_stub_faults()


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds the clients send requests")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (closed loop)")
    parser.add_argument("--max-requests", type=int, default=50_000, help="the most requests sent in all")
    parser.add_argument("--request-timeout", type=float, default=60.0, help="a request not ended by then is hung (s)")
    parser.add_argument("--fault-interval", type=float, default=0.0,
                        help="seconds between restarts of the upstream or the service (default: duration / 6)")
    parser.add_argument("--restarts", choices=("both", "upstream", "service", "none"), default="both",
                        help="what is restarted every --fault-interval seconds (both: in turn)")
    parser.add_argument("--upstream-down", type=float, default=1.0, help="seconds the killed stub stays down")
    parser.add_argument("--shutdown-wait", type=float, default=45.0,
                        help="seconds the service may take to exit after SIGTERM before it is killed")
    for name, every in FAULTS.items():
        parser.add_argument(f"--{name}-every", type=int, default=every, metavar="K",
                            help=f"stub fault: every K-th upstream call (bench/stub.py), 0: never (default {every})")
    parser.add_argument("--slow-ms", type=float, default=2000.0, help="the delay of a slow upstream answer (ms)")
    parser.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                        help="an extra `aft serve` argument, e.g. --serve-arg=--log-level=warning (repeatable)")
    parser.add_argument("--error-pause", type=float, default=0.1,
                        help="seconds a client waits after a request that was not answered")
    parser.add_argument("--rss-interval", type=float, default=1.0, help="seconds between RSS samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="soak", help="results file name")
    parser.add_argument("--results", type=Path, default=None, help="results directory (default: bench/results)")
    return parser


async def main_async(args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    stub_port, service_port = free_port(), free_port()
    lifetime = int(args.duration + args.request_timeout + 600)
    fault_flags = [f for name in FAULTS for f in (f"--{name}-every", str(getattr(args, f"{name}_every")))]
    fault_flags += ["--slow-ms", str(args.slow_ms)]
    stub = Restartable("stub", [*stub_command(stub_port, TIMING, lifetime), *fault_flags],
                       f"http://127.0.0.1:{stub_port}/health", logs / "stub.log")
    service = Restartable("service", [*gateway_command(service_port, stub_port), *args.serve_arg],
                          f"http://127.0.0.1:{service_port}/health", logs / "service.log")
    soak = Soak(args, service, stub, f"http://127.0.0.1:{stub_port}")
    # Startups, every restart, the clients' last requests and the last shutdown, with room to spare.
    bound = 120 + args.duration * 2 + args.request_timeout + args.shutdown_wait
    print(f"soak: {args.clients} clients for {args.duration:.0f} s, logs in {logs}, stops within {bound:.0f} s",
          flush=True)
    try:
        async with asyncio.timeout(bound):
            await soak_run(soak)
            event: dict[str, Any] = {"t": soak.now(), "kind": "final_shutdown", "in_flight": soak.in_flight}
            soak.service_state = "stopping"
            await stop_service(soak, event)
            soak.events.append(event)
    except (TimeoutError, RuntimeError) as exc:
        soak.problems.append(f"the soak stopped early: {exc!r}")
    finally:
        await service.kill()
        await stub.kill()
    return summarize(soak.outcomes, soak.events, soak.rss, dict(soak.upstream_faults), soak.problems,
                     logs / "service.log") | {
        "name": args.name, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(["python -m bench.soak", *sys.argv[1:]]), "machine": machine(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "logs": str(logs),
        "stub": TIMING}


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logs = Path(tempfile.mkdtemp(prefix="aft-soak-"))
    result = asyncio.run(main_async(args, logs))
    if args.results is None:
        save_results(args.name, result, render(result))
    else:
        args.results.mkdir(parents=True, exist_ok=True)
        (args.results / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
        (args.results / f"{args.name}.md").write_text(render(result))
        print(render(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
