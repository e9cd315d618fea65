"""AFT training data: rows (see training/rows.py, re-exported here) and the builders that make them.

Off-policy (`off_policy_examples`), from multi-response preference data in UltraFeedback's
layout: `{"instruction" or "prompt": ..., "completions": [{"response", "model", scores...}]}`.
The target is the best-rated completion (or a reference column); the proposals are up to N
of the OTHER completions, in random order. The target is left out of the proposals by
default: the paper's off-policy data draws both from one pool, but with the answer among
the drafts the cheapest way to lower the loss is to find it and copy it, which teaches
selection rather than the synthesis the aggregation prompt asks for ("should not simply
replicate the given answers"); at inference no draft is the reference either.
`target_in_proposals=True` keeps it in (then one of the N drafts is the target).
UltraFeedback has 4 completions a prompt, so that leaves at most 3 proposals.

On-policy (`on_policy_examples`): N proposals sampled from the model being tuned through
the service's own Backend (one request with n = N a query, a bounded number in flight),
target = the row's reference answer.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from serving.backends.base import Backend, Sampling
from serving.concurrency import all_or_first_error
from serving.errors import InvalidRequest
from serving.format import Message, proposer_messages
from training.rows import (
    DataError,
    Row,
    Sample,
    aft_example,
    data_summary,
    mix_sft,
    read_jsonl,
    sft_example,
    summary_path,
    validate_jsonl,
    validate_rows,
    write_jsonl,
)

__all__ = [
    "DataError", "Row", "Sample", "aft_example", "completion_score", "conversation_of", "data_summary",
    "load_rows", "mix_sft", "off_policy_examples", "off_policy_samples", "on_policy_examples",
    "on_policy_samples", "read_jsonl", "sft_example", "summary_path", "validate_jsonl", "validate_rows",
    "write_jsonl",
]

logger = logging.getLogger(__name__)

_FILE_BUILDERS = {".json": "json", ".parquet": "parquet", ".csv": "csv"}


def load_rows(source: str, *, split: str = "train", name: str | None = None) -> list[Row]:
    """The rows of a JSONL file, or of any `datasets` source (a local json/parquet/csv file or directory,
    or a hub id where the hub is reachable), as plain dicts."""
    path = Path(source)
    if path.is_file() and path.suffix == ".jsonl":
        return read_jsonl(path)
    from datasets import load_dataset  # heavy; only when a dataset is really read

    if path.is_file():
        if path.suffix not in _FILE_BUILDERS:
            raise ValueError(f"{source}: unknown file type; use .jsonl, .json, .parquet or .csv")
        dataset = load_dataset(_FILE_BUILDERS[path.suffix], data_files=str(path), split="train")
    else:
        dataset = load_dataset(source, name, split=split)
    return [dict(row) for row in dataset]


def conversation_of(row: Mapping[str, Any], index: int = 1) -> list[Message]:
    """The query of a source row: "prompt" (text or a message list), "instruction" (text) or "messages".

    A message list must end with a user message: it is the conversation to answer.
    """
    for key in ("prompt", "instruction", "messages"):
        value = row.get(key)
        if isinstance(value, str) and value.strip():
            return [{"role": "user", "content": value}]
        if isinstance(value, list) and value and all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in value):
            if value[-1]["role"] != "user":
                raise DataError(index, f'"{key}" must end with a user message, not {value[-1]["role"]!r}')
            return [{"role": m["role"], "content": m["content"]} for m in value]
    raise DataError(index, 'no query: expected "prompt" or "instruction" text, or a "messages" list')


def _rating(value: object) -> float | None:
    # UltraFeedback's per-aspect annotations look like {"Rating": "4", "Rationale": ...}; "N/A" is no rating.
    if isinstance(value, dict):
        value = value.get("Rating", value.get("rating"))
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def completion_score(completion: Mapping[str, Any], key: str | None = None) -> float | None:
    """How good a completion is rated; None when it carries no rating.

    With `key`, that field. Otherwise the first of: fine-grained_score (the mean of the
    aspect ratings), the mean of "ratings" / "annotations", overall_score, score, rating.
    The aspect mean comes first because UltraFeedback's overall_score comes from a separate
    critique pass that derived preference sets (HuggingFaceH4/ultrafeedback_binarized) moved away from.
    """
    if key is not None:
        return _rating(completion.get(key))
    if (score := _rating(completion.get("fine-grained_score"))) is not None:
        return score
    for many in ("ratings", "annotations"):
        values = completion.get(many)
        items = list(values.values()) if isinstance(values, dict) else values if isinstance(values, list) else []
        numbers = [r for r in map(_rating, items) if r is not None]
        if numbers:
            return sum(numbers) / len(numbers)
    for one in ("overall_score", "score", "rating"):
        if (score := _rating(completion.get(one))) is not None:
            return score
    return None


def _off_policy_sample(row: Row, index: int, rng: random.Random, *, n: int, reference: str | None,
                       target_in_proposals: bool, score: str | None) -> Sample | None:
    conversation = conversation_of(row, index)
    pool = [c for c in row.get("completions") or []
            if isinstance(c, dict) and isinstance(c.get("response"), str) and c["response"].strip()]
    if reference is not None:
        target = row.get(reference)
        if not isinstance(target, str) or not target.strip():
            return None
    else:
        rated = [(s, -i, c) for i, c in enumerate(pool) if (s := completion_score(c, score)) is not None]
        if not rated:
            return None
        target = max(rated, key=lambda r: r[:2])[2]["response"]  # ties: the first listed
    # Compare by text: UltraFeedback repeats some responses verbatim across models.
    drafts = [c["response"] for c in pool if target_in_proposals or c["response"] != target]
    if not drafts:
        return None
    return Sample(conversation, rng.sample(drafts, min(n, len(drafts))), target)


def off_policy_samples(rows: Sequence[Row], *, n: int = 3, reference: str | None = None,
                       target_in_proposals: bool = False, shuffle: bool = True, seed: int = 0,
                       limit: int | None = None, score: str | None = None) -> list[Sample]:
    """Samples from UltraFeedback-layout rows (see the module docstring): up to `n` proposals each.

    reference: a column holding the target instead of the best-rated completion. shuffle: visit
    the rows in a random order (seeded) before `limit` takes the first ones. score: the rating
    field to rank by (default: see completion_score). Rows without a query raise DataError;
    rows without a rated completion, a target or any other completion are skipped (logged).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = random.Random(seed)
    order = list(range(len(rows)))
    if shuffle:
        rng.shuffle(order)
    samples: list[Sample] = []
    skipped = 0
    for i in order:
        if limit is not None and len(samples) >= limit:
            break
        sample = _off_policy_sample(rows[i], i + 1, rng, n=n, reference=reference,
                                    target_in_proposals=target_in_proposals, score=score)
        if sample is None:
            skipped += 1
        else:
            samples.append(sample)
    if skipped:
        logger.warning("off-policy: skipped %d of %d rows (no target or no other completion)",
                       skipped, len(samples) + skipped)
    return samples


def off_policy_examples(rows: Sequence[Row], **options: Any) -> list[Row]:
    """AFT rows from UltraFeedback-layout rows; `options` as off_policy_samples."""
    return [sample.aft_row() for sample in off_policy_samples(rows, **options)]


def _reference_of(row: Mapping[str, Any], key: str, index: int) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(index, f'missing reference answer "{key}"')
    return value


async def on_policy_samples(backend: Backend, rows: Sequence[Mapping[str, Any]], n: int, sampling: Sampling, *,
                            reference: str = "reference", concurrency: int = 64,
                            progress: Callable[[], None] | None = None) -> list[Sample]:
    """Sample `n` proposals a query from `backend` (proposer prompt, one request with n = N), target = row[reference].

    At most `concurrency` requests are in flight (a pool of that many workers): enough to
    keep vLLM's batch full without queueing every query of a large set at once. A query the
    backend refuses (InvalidRequest, e.g. a prompt longer than the context) is skipped and
    logged; any other error stops the build. Samples keep the order of `rows`.
    """
    if n < 1 or concurrency < 1:
        raise ValueError("n and concurrency must be >= 1")
    if sampling.temperature == 0 and n > 1:
        raise ValueError("greedy sampling gives N identical proposals; use a temperature > 0")
    queries = [(conversation_of(row, i), _reference_of(row, reference, i)) for i, row in enumerate(rows, 1)]
    results: list[Sample | None] = [None] * len(queries)
    pending = iter(enumerate(queries))  # shared by the workers: each query is taken once

    async def worker() -> None:
        for i, (conversation, target) in pending:
            try:
                generation = await backend.generate("proposer", proposer_messages(conversation), sampling, n=n)
            except InvalidRequest as exc:
                logger.warning("on-policy: row %d skipped: %s", i + 1, exc)
            else:
                results[i] = Sample(conversation, [c.text for c in generation.completions], target)
            if progress is not None:
                progress()

    await all_or_first_error(worker() for _ in range(min(concurrency, len(queries))))
    return [sample for sample in results if sample is not None]


async def on_policy_examples(backend: Backend, rows: Sequence[Mapping[str, Any]], n: int, sampling: Sampling,
                             **options: Any) -> list[Row]:
    """AFT rows with on-policy proposals; `options` as on_policy_samples."""
    return [sample.aft_row() for sample in await on_policy_samples(backend, rows, n, sampling, **options)]
