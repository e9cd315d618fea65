"""`aft data`: build AFT training rows (off-policy or on-policy) and validate them.

    aft data off-policy ultrafeedback.jsonl -o data/train.jsonl --n 3 --limit 64000 --sft-ratio 0.25
    aft data on-policy queries.jsonl -o data/train.jsonl --model meta-llama/Llama-3.1-8B --n 5
    aft data rl queries.jsonl -o data/rl.jsonl --model models/aft --n 5 --reward math
    aft data validate data/train.jsonl

Each build writes the rows and, beside them, NAME.summary.json (how they were built),
which `aft export` copies into the checkpoint's aft.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from serving.backends.base import Sampling
from serving.backends.vllm import VLLMBackend
from serving.format import AggregationFormat
from serving.manifest import read_manifest
from training.data import (
    Row,
    Sample,
    load_rows,
    mix_sft,
    off_policy_samples,
    on_policy_samples,
    summary_path,
    validate_jsonl,
    validate_rows,
    write_jsonl,
)
from training.engine import add_engine_arguments, checkpoint_problem, engine_config
from training.rewards import make_check
from training.rl_data import RLGroup, RLMix, groups_of, rl_rows, sample_aggregations, validate_rl_rows


def _write(samples: list[Sample], args: argparse.Namespace, recipe: dict[str, Any]) -> int:
    aft = [sample.aft_row(args.format) for sample in samples]
    rows: list[Row] = mix_sft(aft, [s.sft_row() for s in samples], args.sft_ratio, args.seed) if args.sft_ratio else aft
    validate_rows(rows)  # a builder bug must not reach a training run
    write_jsonl(rows, args.output)
    summary = {**recipe, "format": args.format.value, "source": args.source, "seed": args.seed,
               "limit": args.limit, "sft_ratio": args.sft_ratio,
               "aft_examples": len(aft), "sft_examples": len(rows) - len(aft),
               "created": datetime.now(UTC).isoformat(timespec="seconds")}
    summary_path(args.output).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{args.output}: {len(aft)} aggregation + {len(rows) - len(aft)} plain examples")
    return 0


def off_policy(args: argparse.Namespace) -> int:
    args.format = args.format or AggregationFormat.PAPER
    samples = off_policy_samples(
        load_rows(args.source, split=args.split, name=args.name), n=args.n, reference=args.reference,
        target_in_proposals=args.target_in_proposals, shuffle=args.shuffle, seed=args.seed, limit=args.limit,
        score=args.score)
    return _write(samples, args, {
        "builder": "off-policy", "split": args.split, "n": args.n, "shuffle": args.shuffle,
        "target": f"reference:{args.reference}" if args.reference else "best-rated",
        "target_in_proposals": args.target_in_proposals})


def _tokenizer_with_template(model: str, template: str, directory: str) -> str:
    # The engine renders prompts with its tokenizer's template; a base model may have none.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.chat_template = Path(template).read_text(encoding="utf-8")
    tokenizer.save_pretrained(directory)
    return directory


@asynccontextmanager
async def _drafting(args: argparse.Namespace, workdir: str) -> AsyncIterator[tuple[VLLMBackend, Sampling]]:
    """--model on a started in-process engine, and the drafts' sampling the flags set."""
    tokenizer = _tokenizer_with_template(args.model, args.chat_template, workdir) if args.chat_template else None
    backend = VLLMBackend(engine_config(args, args.model, tokenizer=tokenizer, seed=args.seed))
    await backend.start()
    try:
        yield backend, Sampling(temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens)
    finally:
        await backend.close()


def _queries(args: argparse.Namespace) -> list[Row]:
    """The source's rows, shuffled when asked; refuses a --model that is no checkpoint before any engine."""
    problem = checkpoint_problem(args.model)
    if problem:
        raise ValueError(f"--model {problem}")
    rows = load_rows(args.source, split=args.split, name=args.name)
    if args.shuffle:
        random.Random(args.seed).shuffle(rows)
    return rows


async def _sample_on_policy(args: argparse.Namespace, rows: list[Row], workdir: str) -> list[Sample]:
    from tqdm import tqdm

    async with _drafting(args, workdir) as (backend, sampling):
        with tqdm(total=len(rows), desc="queries", unit="q") as bar:
            return await on_policy_samples(backend, rows, args.n, sampling, reference=args.reference,
                                           concurrency=args.concurrency, progress=bar.update)


def on_policy(args: argparse.Namespace) -> int:
    rows = _queries(args)
    args.format = args.format or AggregationFormat.PAPER
    rows = rows[:args.limit] if args.limit is not None else rows
    with tempfile.TemporaryDirectory() as workdir:
        samples = asyncio.run(_sample_on_policy(args, rows, workdir))
    return _write(samples, args, {
        "builder": "on-policy", "split": args.split, "n": args.n, "shuffle": args.shuffle, "model": args.model,
        "target": f"reference:{args.reference}", "proposal_temperature": args.temperature,
        "proposal_top_p": args.top_p, "proposal_max_tokens": args.max_tokens})


async def _sample_rl(args: argparse.Namespace, rows: list[Row], workdir: str) -> list[RLGroup]:
    async with _drafting(args, workdir) as (backend, sampling):
        samples = await on_policy_samples(backend, rows, args.n, sampling, reference=args.reference,
                                          concurrency=args.concurrency)
        # The intermediate round samples as round 0 does (the pipeline's draft sampling).
        aggregations = (await sample_aggregations(backend, samples, sampling, concurrency=args.concurrency,
                                                  fmt=args.format)
                        if args.round2_share > 0 else [[] for _ in samples])
    return groups_of(samples, aggregations)


def rl(args: argparse.Namespace) -> int:
    if args.sft_ratio:
        raise ValueError("--sft-ratio: RL rows are aggregation prompts only (GRPO has no plain targets)")
    # The prompts of the format the checkpoint was trained on, unless told otherwise.
    manifest = read_manifest(args.model) if Path(args.model).is_dir() else None
    args.format = args.format or (manifest.format if manifest else AggregationFormat.PAPER)
    check = make_check(args.reward, format_reward=0.0)  # a bad spec is refused before the engine starts
    mix = RLMix(hard_share=args.hard_share, round2_share=args.round2_share, subset_share=args.subset_share,
                subset_k=args.subset_k)
    rows = _queries(args)
    with tempfile.TemporaryDirectory() as workdir:
        groups = asyncio.run(_sample_rl(args, rows, workdir))
    built, summary = rl_rows(groups, check, mix, seed=args.seed, limit=args.limit, fmt=args.format)
    validate_rl_rows(built, source=args.output)
    write_jsonl(built, args.output)
    summary = {"builder": "rl", "format": args.format.value, "source": args.source,
               "model": args.model, "n": args.n, "reward": args.reward,
               "seed": args.seed, "proposal_temperature": args.temperature, "proposal_top_p": args.top_p,
               **summary, "created": datetime.now(UTC).isoformat(timespec="seconds")}
    summary_path(args.output).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{args.output}: {summary['rows']} prompts ({summary['hard']} hard, {summary['easy']} easy; "
          f"{summary['kinds']})")
    return 0


def validate(args: argparse.Namespace) -> int:
    print(f"{args.file}: {validate_jsonl(args.file)} rows, all valid")
    return 0


def _common(parser: argparse.ArgumentParser, n: int) -> None:
    parser.add_argument("source", help="JSONL file or a `datasets` source (json/parquet/csv file, directory, hub id).")
    parser.add_argument("-o", "--output", required=True, help="Rows to write (JSONL).")
    parser.add_argument("--n", type=int, default=n, help=f"Proposals per example (default {n}).")
    parser.add_argument("--split", default="train", help="Split of a `datasets` source.")
    parser.add_argument("--name", help="Configuration name of a `datasets` source.")
    parser.add_argument("--shuffle", action=argparse.BooleanOptionalAction, default=True,
                        help="Visit the source rows in a random (seeded) order before --limit.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of shuffling, proposal choice and mixing.")
    parser.add_argument("--limit", type=int, help="At most this many aggregation examples.")
    parser.add_argument("--sft-ratio", type=float, default=0.0,
                        help="Add this many plain answering examples per aggregation example (e.g. 0.25).")
    parser.add_argument("--format", type=AggregationFormat, choices=list(AggregationFormat),
                        help="Layout of the aggregation prompts (serving/format.py): paper (default; rl: the "
                             "--model's aft.json format) or conversation-first, whose rounds reuse the "
                             "conversation's cached prefix; `aft export` records it in aft.json.")


def _drafting_arguments(parser: argparse.ArgumentParser) -> None:
    """How --model writes its drafts, and its engine."""
    parser.add_argument("--chat-template", help="Jinja chat template for a model without one (use training's).")
    parser.add_argument("--temperature", type=float, default=0.7, help="Draft temperature (reference: 0.7).")
    parser.add_argument("--top-p", type=float, default=0.95, help="Draft top_p (reference: 0.95).")
    parser.add_argument("--max-tokens", type=int, default=4096, help="Token limit of each draft.")
    parser.add_argument("--concurrency", type=int, default=64, help="Queries in flight at once.")
    add_engine_arguments(parser)


def make_parser(prog: str = "aft data") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Build and validate AFT training rows.")
    commands = parser.add_subparsers(dest="data_command", required=True)
    off = commands.add_parser("off-policy", help="Proposals from other models' completions (UltraFeedback layout).")
    _common(off, 3)
    off.add_argument("--reference", help="Column holding the target (default: the best-rated completion).")
    off.add_argument("--target-in-proposals", action="store_true",
                     help="Let the target also be one of the proposals (default: drawn from the others).")
    off.add_argument("--score", help="Rating field to rank completions by (default: fine-grained, then overall).")
    off.set_defaults(handler=off_policy)

    on = commands.add_parser("on-policy", help="Proposals sampled from --model on the in-process vLLM backend.")
    _common(on, 5)
    on.add_argument("--model", required=True, help="Model that writes the proposals (the one being tuned).")
    on.add_argument("--reference", default="reference", help="Column holding the target answer.")
    _drafting_arguments(on)
    on.set_defaults(handler=on_policy)

    rl_parser = commands.add_parser("rl", help="Prompts for `aft train --method grpo`: aggregations of on-policy "
                                               "drafts of --model, hard and easy, round 2 and K-subsets.")
    _common(rl_parser, 5)
    rl_parser.add_argument("--model", required=True, help="Model that writes the drafts: the AFT checkpoint to train.")
    rl_parser.add_argument("--reference", default="reference", help="Column holding the reference answer.")
    rl_parser.add_argument("--reward", default="exact",
                           help="The check that says which drafts are right, as `aft train --reward` (default exact).")
    rl_parser.add_argument("--hard-share", type=float, default=0.5,
                           help="Share of prompts whose drafts are mostly wrong (default 0.5).")
    rl_parser.add_argument("--round2-share", type=float, default=0.25,
                           help="Share of prompts over N aggregations of the drafts, a second round (default 0.25).")
    rl_parser.add_argument("--subset-share", type=float, default=0.25,
                           help="Share of prompts that read --subset-k of the N drafts (default 0.25).")
    rl_parser.add_argument("--subset-k", type=int, default=3, help="Drafts a subset prompt reads (default 3).")
    _drafting_arguments(rl_parser)
    rl_parser.set_defaults(handler=rl)

    check = commands.add_parser("validate", help="Check a rows file; the first bad line is named.")
    check.add_argument("file")
    check.set_defaults(handler=validate)
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "aft data") -> int:
    args = make_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.handler(args)
    except (ValueError, OSError) as exc:  # DataError names the file and line
        print(f"{prog} {args.data_command}: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main(prog="python -m training.data_cli"))
