"""The soak's figures from its outcomes, events and samples, and their markdown."""

from __future__ import annotations

import collections
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.loadgen import percentile
from bench.soak_client import Outcome

KINDS = ("answered", "clean_error", "refused", "lost", "hung", "unclean")
FAILING = ("lost", "hung", "unclean")


def _rss_by_process(rss: list[tuple[float, int, float]]) -> list[dict[str, Any]]:
    """Each service process's RSS: first sample, peak, last (MB), and when it was sampled."""
    by_pid: dict[int, list[tuple[float, float]]] = collections.defaultdict(list)
    for t, pid, mb in rss:
        by_pid[pid].append((t, mb))
    return [{"pid": pid, "from_s": s[0][0], "to_s": s[-1][0], "first_mb": s[0][1], "peak_mb": max(m for _, m in s),
             "last_mb": s[-1][1], "samples": len(s)} for pid, s in by_pid.items()]


def _log_findings(path: Path) -> dict[str, Any]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {"tracebacks": None, "error_lines": None, "first_errors": []}
    errors = [line for line in lines if " ERROR " in line]
    return {"tracebacks": sum(line.startswith("Traceback") for line in lines), "error_lines": len(errors),
            "first_errors": [line[:300] for line in errors[:10]]}


def summarize(outcomes: list[Outcome], events: list[dict[str, Any]], rss: list[tuple[float, int, float]],
              upstream_faults: dict[str, int], problems: list[str], service_log: Path) -> dict[str, Any]:
    counts: collections.Counter[str] = collections.Counter(o.kind for o in outcomes)
    totals = {"sent": len(outcomes), **{kind: counts.get(kind, 0) for kind in KINDS}}
    by_stream = {("streamed" if stream else "not streamed"): dict(collections.Counter(
        o.kind for o in outcomes if o.stream == stream)) for stream in (False, True)}
    answered = [o.elapsed * 1000 for o in outcomes if o.kind == "answered"]
    failures = [asdict(o) for o in outcomes if o.kind in FAILING]
    ok = not failures and not problems
    return {"ok": ok, "totals": totals, "by_stream": by_stream,
            "answer_ms": {"p50": percentile(answered, 50), "p99": percentile(answered, 99)},
            "clean_errors": dict(collections.Counter(f"{o.detail} (upstream {o.upstream})" for o in outcomes
                                                     if o.kind == "clean_error").most_common()),
            "failures": dict(collections.Counter(f"{o.kind}: {o.detail[:120]} (service {o.service})"
                                                 for o in outcomes if o.kind in FAILING).most_common()),
            "failure_samples": failures[:30], "events": events, "upstream_faults": upstream_faults,
            "rss_by_process": _rss_by_process(rss), "rss": rss, "service_log": _log_findings(service_log),
            "problems": problems}


def render(result: dict[str, Any]) -> str:
    t, s = result["totals"], result["settings"]
    lines = [f"# Soak `{result['name']}` ({result['created']})", "",
             f"`{result['command']}`: {s['clients']} clients for {s['duration']:.0f} s; stub faults every "
             f"{s['error_every']}/{s['drop_every']}/{s['cut_every']}/{s['slow_every']}/{s['close_every']}-th "
             f"upstream call (error/drop/cut/slow {s['slow_ms']:.0f} ms/close); load average at the start "
             f"{result['machine']['load_avg_start']}. **{'PASS' if result['ok'] else 'FAIL'}**", "",
             "| sent | answered | clean errors | refused (service down) | lost | hung | unclean |",
             "|---|---|---|---|---|---|---|",
             f"| {t['sent']} | {t['answered']} | {t['clean_error']} | {t['refused']} | {t['lost']} | {t['hung']} "
             f"| {t['unclean']} |", "",
             f"Answers: p50 {result['answer_ms']['p50']} ms, p99 {result['answer_ms']['p99']} ms. "
             f"Upstream faults injected: {result['upstream_faults']}.", "",
             "Clean errors: " + (", ".join(f"{k} x{v}" for k, v in result["clean_errors"].items()) or "none"), ""]
    if result["failures"]:
        lines += ["Lost, hung, unclean:", ""] + [f"- {k} x{v}" for k, v in result["failures"].items()] + [""]
    lines += ["| t (s) | event | requests in flight | exit code | exit (s) | back up (s) |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {e['t']} | {e['kind']} | {e['in_flight']} | {e.get('exit_code', '')} | {e.get('exit_s', '')} "
              f"| {e.get('start_s', '')} |" for e in result["events"]]
    lines += ["", "Service RSS (MB) per process: " + "; ".join(
        f"pid {p['pid']} {p['from_s']}-{p['to_s']} s: {p['first_mb']} -> {p['last_mb']} (peak {p['peak_mb']})"
        for p in result["rss_by_process"])]
    every = max(1, len(result["rss"]) // 12)
    series = ", ".join(f"{t:.0f}: {mb}" for t, _, mb in result["rss"][::every])
    lines += ["", f"Service RSS over time (s: MB): {series}"]
    log = result["service_log"]
    lines += ["", f"Service log: {log['tracebacks']} tracebacks, {log['error_lines']} ERROR lines."]
    lines += [f"- problem: {p}" for p in result["problems"]]
    return "\n".join(lines) + "\n"
