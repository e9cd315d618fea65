"""Profile the service under load with py-spy: where does its CPU go?

    python -m bench.profile [--concurrency 64] [--stream] [--proposals 3 --rounds 2] [--seconds 8]

Starts the stub and the service, samples the service with `py-spy record` while the load
generator drives it, and prints the functions with the most samples, by own time and by
inclusive time (collapsed stacks are kept in the log folder for a flame graph).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.client import Connection
from bench.loadgen import run_load, service_answer
from bench.run import TIMING, servers


def summarize(collapsed: Path, top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].split("/")[-1] + ")"
                  for f in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples"]
    for title, counter in (("own time", own), ("inclusive time", inclusive)):
        lines.append(f"\n-- {title} --")
        lines += [f"{100 * n / total:5.1f}%  {name}" for name, n in counter.most_common(top)]
    return "\n".join(lines)


async def drive(port: int, args: argparse.Namespace) -> None:
    connections = [Connection(port) for _ in range(args.concurrency)]
    client = service_answer(args.proposals, args.rounds, args.stream)
    outcomes, wall = await run_load(client, connections, requests=10**6, seconds=args.seconds)
    for connection in connections:
        connection.close()
    ok = sum(o.ok for o in outcomes)
    print(f"{ok} answers in {wall:.1f} s ({ok / wall:.1f}/s), {len(outcomes) - ok} errors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--proposals", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--native", action="store_true", help="include native frames (C extensions)")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    logs = Path(tempfile.mkdtemp(prefix="aft-profile-"))
    with servers(logs, TIMING) as (_, service_port, watch, _stub_watch):
        out = logs / "service.collapsed"
        command = [py_spy, "record", "--pid", str(watch.process.pid), "--rate", "250", "--format", "raw",
                   "--duration", str(int(args.seconds)), "-o", str(out), "--nonblocking"]
        if args.native:
            command.append("--native")
        recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        cpu_before = watch.cpu_seconds()
        asyncio.run(drive(service_port, args))
        print(f"service CPU: {watch.cpu_seconds() - cpu_before:.2f} s")
        recorder.wait(timeout=60)
    print(f"collapsed stacks: {out}")
    print(summarize(out, args.top))


if __name__ == "__main__":
    main()
