"""The toy recipe's RL stage: GRPO on the AFT checkpoint, rewarded by the task's own check.

After AFT (imitation of reference answers), the aggregator is trained on its own aggregations:
1. on-policy drafts: the AFT checkpoint answers `rl_queries` training problems on vLLM (proposer
   prompt, the recipe's draft sampling), N of `rl_proposals` drafts a query; for round-2 prompts it
   then aggregates each query's N drafts N times (the pipeline's intermediate round);
2. rows (training/rl_data.py): one aggregation prompt a query, full, K-subset or round 2, hard and
   easy groups mixed at `rl_hard_share`;
3. GRPO (training/grpo.py) for `rl_steps` steps, reward `task:<task>` (right or not);
4. export with the AFT checkpoint's recommendations less early exit (`rl_manifest`); aft.json's
   `data.rl_stage` records the stage.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from pathlib import Path
from typing import Any

from serving.backends.base import Sampling
from serving.backends.vllm import VLLMBackend
from training.config import TrainConfig
from training.data import on_policy_samples
from training.export import export
from training.grpo import train_grpo
from training.rewards import make_check
from training.rl_config import RLConfig
from training.rl_data import RLGroup, RLMix, groups_of, rl_rows, sample_aggregations
from training.rows import Sample, write_jsonl
from training.tasks import Problem
from training.toy_config import RecipeConfig, toy_task

logger = logging.getLogger(__name__)


async def _groups(model: Path, problems: list[Problem], sizes: list[int], config: RecipeConfig,
                  engine: Any) -> list[RLGroup]:
    """Each problem with `sizes[i]` drafts of `model` and, when round-2 prompts are asked for, as many
    aggregations of them, all sampled on one vLLM engine."""
    backend = VLLMBackend(engine(model, seed=config.seed))
    draft = Sampling(temperature=config.proposal_temperature, top_p=config.proposal_top_p,
                     max_tokens=config.digits + 8)
    await backend.start()
    try:
        rows = [{"messages": p.conversation, "reference": p.answer} for p in problems]
        sampled = await on_policy_samples(backend, rows, max(sizes), draft, concurrency=128)
        assert len(sampled) == len(problems), "the backend refused some queries"
        samples = [Sample(s.conversation, s.proposals[:n], s.target) for s, n in zip(sampled, sizes, strict=True)]
        aggregations = (await sample_aggregations(backend, samples, draft, concurrency=128)
                        if config.rl_round2_share > 0 else [[] for _ in samples])
    finally:
        await backend.close()
    return groups_of(samples, aggregations)


def rl_manifest(aft_manifest: dict[str, Any], stage: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The RL export's data summary (the AFT checkpoint's, with `rl_stage`) and recommendations: the AFT
    checkpoint's, less early exit. Early exit skips the aggregation when the drafts agree, and was
    measured as free on AFT models; after RL the aggregation is worth more (the shipped multiplication
    model, seed 1: 90.4% with it against 93.0% without at N = 3, two rounds; docs/results.md)."""
    recommended = {k: v for k, v in (aft_manifest.get("recommended") or {}).items() if k != "early_exit"}
    return {**aft_manifest.get("data", {}), "rl_stage": stage}, recommended


def run_rl_stage(aft_dir: str | Path, out_dir: str | Path, config: RecipeConfig, *, work_dir: str | Path,
                 engine: Any) -> Path:
    """GRPO from the exported AFT checkpoint `aft_dir`; exports the result to `out_dir` and returns it.
    `engine(model, seed=...)` is the toy's vLLM EngineConfig."""
    aft, out, work = Path(aft_dir), Path(out_dir), Path(work_dir) / "rl"
    started = time.monotonic()
    task = toy_task(config)
    problems = task.training_problems(config.rl_queries, config.seed * 10 + 6)
    rng = random.Random(config.seed * 10 + 7)
    sizes = [rng.choice(config.rl_proposals) for _ in problems]
    groups = asyncio.run(_groups(aft, problems, sizes, config, engine))
    reward = f"task:{config.task}"
    mix = RLMix(hard_share=config.rl_hard_share, round2_share=config.rl_round2_share,
                subset_share=config.rl_subset_share, subset_k=config.rl_subset_k)
    rows, summary = rl_rows(groups, make_check(reward), mix, seed=config.seed)
    data = work / "rows.jsonl"
    write_jsonl(rows, data)
    sampled = time.monotonic()
    logger.info("toy RL stage: %d rows (%s) in %.0f s", len(rows), summary, sampled - started)

    train = TrainConfig(
        model=str(aft), data=str(data), output_dir=str(work), method="grpo", max_steps=config.rl_steps,
        batch_size=config.rl_batch_size, learning_rate=config.rl_learning_rate, warmup=0.1, weight_decay=0.0,
        scheduler="constant_with_warmup", max_length=512, seed=config.seed, use_cpu=True,
        gradient_checkpointing=False, logging_steps=10, save_steps=10 * config.rl_steps, save_total_limit=1)
    rl = RLConfig(reward=reward, num_generations=config.rl_num_generations,
                  max_completion_length=config.digits + 8, rl_temperature=config.rl_temperature,
                  beta=config.rl_beta)
    final = train_grpo(train, rl)
    trained = time.monotonic()

    stage = {"method": "grpo", "steps": config.rl_steps, "reward": reward, "rows": summary,
             "learning_rate": config.rl_learning_rate, "batch_size": config.rl_batch_size,
             "num_generations": config.rl_num_generations, "temperature": config.rl_temperature,
             "beta": config.rl_beta, "proposals": list(config.rl_proposals),
             "seconds": {"samples": round(sampled - started, 1), "grpo": round(trained - sampled, 1)}}
    manifest = json.loads((aft / "aft.json").read_text())
    data_summary, recommended = rl_manifest(manifest, stage)
    export(final, out, base_model=manifest.get("base_model"), data_summary=data_summary, recommended=recommended)
    logger.info("toy RL stage: %s in %.0f s", out, time.monotonic() - started)
    return out
