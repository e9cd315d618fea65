"""Markdown tables and the issue's targets, from a run's JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Row = dict[str, Any]


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pair(a: Any, b: Any, digits: int = 1) -> str:
    return f"{_f(a, digits)} / {_f(b, digits)}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.1f}x" if a and b else "–"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _relay(r: Row) -> str:
    return (f"{_pair(r['relay_p50_ms'], r['relay_p99_ms'], 2)} "
            f"({_pair(r['direct_relay_p50_ms'], r['direct_relay_p99_ms'], 2)})")


def _check(name: str, value: Any, met: bool | None, where: str) -> Row:
    return {"target": name, "measured": value, "met": met, "where": where}


def targets(result: Row) -> list[Row]:
    """The issue's targets, judged on this run's rows (None: not measured in this run)."""
    gateway: list[Row] = result.get("gateway", [])
    compare: list[Row] = result.get("comparison", [])
    aft = [r for r in compare if r["target"] == "aft"]
    optillm = {r["concurrency"]: r for r in compare if r["target"] == "optillm"}
    service = gateway + aft
    out = []
    c1 = [r for r in service if r["concurrency"] == 1 and r.get("overhead_p50_ms") is not None]
    if c1:
        worst = max(c1, key=lambda r: r["overhead_p50_ms"])
        out.append(_check("overhead p50 < 1.5 ms at concurrency 1", worst["overhead_p50_ms"],
                          worst["overhead_p50_ms"] < 1.5,
                          f"worst of {len(c1)} configurations: N={worst['proposals']} R={worst['rounds']} "
                          f"stream={worst.get('stream', False)}"))
    cpu = {r["concurrency"]: r["cpu_ms_per_answer"] for r in aft}
    if cpu:
        at = 64 if 64 in cpu else max(cpu)
        out.append(_check("service CPU per answer <= 1.2 ms (N=3, R=2)", cpu[at], cpu[at] <= 1.2,
                          f"concurrency {at}; all: " + ", ".join(f"C={c}: {v}" for c, v in sorted(cpu.items()))))
    if 64 in optillm:
        ours = next(r for r in aft if r["concurrency"] == 64)
        ratio = ours["answers_per_s"] / optillm[64]["answers_per_s"] if optillm[64]["answers_per_s"] else None
        out.append(_check("throughput >= 8 x optillm at concurrency 64, no errors",
                          round(ratio, 1) if ratio else None, bool(ratio and ratio >= 8 and ours["errors"] == 0),
                          f"{ours['answers_per_s']} vs {optillm[64]['answers_per_s']} answers/s, "
                          f"errors {ours['errors']} vs {optillm[64]['errors']}"))
    streams = [r for r in gateway if r.get("stream") and r["concurrency"] == 1 and r.get("relay_p99_ms") is not None]
    if streams:
        worst = max(streams, key=lambda r: r["relay_p99_ms"])
        out.append(_check("streaming: token relayed within 5 ms of the upstream sending it", worst["relay_p99_ms"],
                          worst["relay_p99_ms"] <= 5.0,
                          "p99 of upstream send -> client receipt through the service, concurrency 1 "
                          f"(direct from the stub: {worst['direct_relay_p99_ms']} ms)"))
    counted = [r for r in service if r.get("upstream_requests_per_answer") is not None]
    if counted:
        bad = [r for r in counted if abs(r["upstream_requests_per_answer"] - (r["rounds"] + 1)) > 1e-9]
        out.append(_check("upstream requests per answer = rounds + 1",
                          "all equal" if not bad else f"{len(bad)} differ", not bad, f"{len(counted)} configurations"))
    big = [r for r in gateway if r.get("stream") and r["concurrency"] == 256]
    if big:
        peak = max(r["peak_rss_mb"] for r in big)
        out.append(_check("peak RSS <= 250 MB at 256 concurrent streams", peak, peak <= 250, "openai backend"))
    return out


def render_targets(rows: Sequence[Row]) -> str:
    marks = {True: "met", False: "**not met**", None: "–"}
    return _table(["target", "measured", "", "where"],
                  [[r["target"], _f(r["measured"], 2), marks[r["met"]], r["where"]] for r in rows])


def render_stub(result: Row) -> str:
    m = result["machine"]
    stub = result["stub"]
    out = [f"# Benchmark `{result['name']}` ({result['created']})\n",
           f"`{result['command']}` on {m['cpus']} x {m['cpu']}, Python {m['python']}; load average (1, 5, 15 min) "
           f"{m['load_avg_start']} at the start, {m.get('load_avg_end')} at the end (other jobs share the "
           "machine: the `load` column is the 1-minute load when each row started).\n",
           f"Stub upstream: {stub['ttft_ms']} ms to first token, {stub['tpot_ms']} ms per token, {stub['tokens']} "
           "tokens per choice. *Ideal* is the same rounds + 1 calls made directly to the stub by the load generator "
           "at the same concurrency; *overhead* = service - ideal (p50 - p50, p99 - p99). *Relay*: time from the "
           "stub sending a token to the client reading it, through the service (direct in brackets). Latencies in "
           "ms; CPU is the service process's user + system time per answer.\n"]
    if result.get("targets"):
        out += ["## Targets\n", render_targets(result["targets"])]
    gateway = result.get("gateway", [])
    if gateway:
        out.append("## The service against the ideal critical path\n")
        out.append(_table(
            ["N", "R", "stream", "C", "answers/s", "p50 / p99", "ideal p50 / p99", "overhead p50 / p99",
             "TTFT p50 / p99", "relay p50 / p99 (direct)", "upstream req/answer", "CPU ms/answer", "peak RSS MB",
             "errors", "load"],
            [[str(r["proposals"]), str(r["rounds"]), "yes" if r["stream"] else "no", str(r["concurrency"]),
              _f(r["answers_per_s"]), _pair(r["latency_p50_ms"], r["latency_p99_ms"]),
              _pair(r["ideal_p50_ms"], r["ideal_p99_ms"]), _pair(r["overhead_p50_ms"], r["overhead_p99_ms"]),
              _pair(r["ttft_p50_ms"], r["ttft_p99_ms"]),
              _relay(r) if r["stream"] else "–",
              _f(r.get("upstream_requests_per_answer"), 2), _f(r["cpu_ms_per_answer"], 2), _f(r["peak_rss_mb"]),
              str(r["errors"]), _f(r["load_avg_1m"], 2)] for r in gateway]))
    compare = result.get("comparison", [])
    if compare:
        out.append("## Side by side with optillm 0.4.0 `moa` (N = 3, rounds = 2: three sequential upstream calls "
                   "each; not streamed)\n")
        rows = []
        for aft in (r for r in compare if r["target"] == "aft"):
            c = aft["concurrency"]
            opt: Row = next((r for r in compare if r["target"] == "optillm" and r["concurrency"] == c), {})
            rows.append([str(c), _pair(aft["answers_per_s"], opt.get("answers_per_s")),
                         _ratio(aft["answers_per_s"], opt.get("answers_per_s")),
                         _pair(aft["latency_p50_ms"], opt.get("latency_p50_ms")),
                         _pair(aft["latency_p99_ms"], opt.get("latency_p99_ms")), _f(aft["ideal_p50_ms"]),
                         _pair(aft["overhead_p50_ms"], opt.get("overhead_p50_ms")),
                         _pair(aft["cpu_ms_per_answer"], opt.get("cpu_ms_per_answer"), 2),
                         _ratio(opt.get("cpu_ms_per_answer"), aft["cpu_ms_per_answer"]),
                         _pair(aft["peak_rss_mb"], opt.get("peak_rss_mb"), 0),
                         _ratio(opt.get("peak_rss_mb"), aft["peak_rss_mb"]),
                         _pair(aft["upstream_requests_per_answer"], opt.get("upstream_requests_per_answer"), 2),
                         _pair(aft["errors"], opt.get("errors")), _f(aft["load_avg_1m"], 2)])
        out.append(_table(["C", "answers/s aft / optillm", "throughput ratio", "p50 aft / optillm",
                           "p99 aft / optillm", "ideal p50", "overhead p50 aft / optillm",
                           "CPU ms/answer aft / optillm", "optillm CPU / aft", "peak RSS MB aft / optillm",
                           "optillm RSS / aft", "upstream req/answer", "errors", "load"], rows))
    return "\n".join(out)
