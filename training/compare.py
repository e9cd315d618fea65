"""Two `aft eval` runs of one task side by side: the AFT-only model and the model after its RL stage.

    python -m training.compare docs/toy/rl/multiplication/seed-0/aft docs/toy/rl/multiplication/seed-0/rl \\
        --out docs/toy/rl/multiplication/seed-0/compare.md
    python -m training.compare --seeds docs/toy/rl/reversal --out docs/toy/rl/reversal/seeds.md

For every propose-and-aggregate row both runs measured (N, rounds, K of N), the accuracy of each with
its Wilson 95% interval, the difference, and generated tokens per correct answer; then the model
answering directly. Both runs must have evaluated the same problems (same --seed and --problems).
With `--seeds DIR`, the pairs DIR/seed-*/aft and DIR/seed-*/rl (`make toy-rl`) pooled: each row's
accuracy at every seed, their mean and spread (highest minus lowest), AFT only and after RL;
`--rl-name` pools another RL stage's directories instead (seed-*/rl-long, say).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_AGGREGATE = "AFT, propose-and-aggregate"


def _key(row: dict[str, Any]) -> tuple[int, int, str] | None:
    method = row["method"]
    if row.get("model") != "aft" or not method.startswith(_AGGREGATE) or "early exit" in method:
        return None
    subset = method.split("reads ", 1)[1].split(" of", 1)[0] if "reads K=" in method else "all"
    return row["proposals"], row["rounds"], subset


def _direct(result: dict[str, Any]) -> dict[str, Any] | None:
    """The AFT model's row answering directly (N = 1, no aggregation), if the run measured it."""
    return next((row for row in result["rows"] if row["method"] == "AFT, answering directly"), None)


def _cell(row: dict[str, Any]) -> str:
    return f"{100 * row['accuracy']:.1f}% ({100 * row['ci_low']:.1f}-{100 * row['ci_high']:.1f})"


def _per_correct(row: dict[str, Any]) -> str:
    value = row.get("tokens_per_correct")
    return "–" if value is None or not row["correct"] else f"{value:.0f}"


def compare_table(aft: dict[str, Any], rl: dict[str, Any]) -> str:
    """Markdown: the rows both results hold, AFT-only against AFT+RL."""
    if aft["problems"] != rl["problems"]:
        raise ValueError(f"the runs measured different problems ({aft['problems']} and {rl['problems']})")
    after = {key: row for row in rl["rows"] if (key := _key(row))}
    lines = ["| N | rounds | reads | AFT only | AFT + RL | difference | tokens / correct (AFT, +RL) |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in aft["rows"]:
        key = _key(row)
        if key is None or key not in after:
            continue
        other = after[key]
        n, rounds, reads = key
        gain = 100 * (other["accuracy"] - row["accuracy"])
        lines.append(f"| {n} | {rounds} | {reads} | {_cell(row)} | {_cell(other)} | {gain:+.1f} | "
                     f"{_per_correct(row)}, {_per_correct(other)} |")
    a, b = _direct(aft), _direct(rl)
    if a is not None and b is not None:
        lines.append(f"| 1 | 0 | answering directly | {_cell(a)} | {_cell(b)} | "
                     f"{100 * (b['accuracy'] - a['accuracy']):+.1f} | {_per_correct(a)}, {_per_correct(b)} |")
    return "\n".join(lines) + "\n"


def _accuracies(result: dict[str, Any]) -> dict[tuple[int, int, str], float]:
    rows = {key: row["accuracy"] for row in result["rows"] if (key := _key(row))}
    direct = _direct(result)
    if direct is not None:
        rows[(1, 0, "answering directly")] = direct["accuracy"]
    return rows


def _pooled(values: Sequence[float]) -> str:
    by_seed = " / ".join(f"{100 * v:.1f}" for v in values)
    return f"{by_seed} | {100 * sum(values) / len(values):.1f}% | {100 * (max(values) - min(values)):.1f}"


def seeds_table(runs: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    """Markdown: for every row all runs hold, its accuracy at each seed (in the order given), the mean
    and the spread, AFT only and after RL."""
    aft = [_accuracies(a) for a, _ in runs]
    rl = [_accuracies(r) for _, r in runs]
    keys = [key for key in aft[0] if all(key in run for run in (*aft, *rl))]
    lines = ["| N | rounds | reads | AFT only, by seed | mean | spread | AFT + RL, by seed | mean | spread |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key in keys:
        n, rounds, reads = key
        lines.append(f"| {n} | {rounds} | {reads} | {_pooled([run[key] for run in aft])} | "
                     f"{_pooled([run[key] for run in rl])} |")
    return "\n".join(lines) + "\n"


def _load(source: str | Path) -> dict[str, Any]:
    path = Path(source)
    result: dict[str, Any] = json.loads((path / "results.json" if path.is_dir() else path).read_text())
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.compare", description=__doc__.split("\n")[0])
    parser.add_argument("aft", nargs="?", help="Results directory (or results.json) of the AFT-only model.")
    parser.add_argument("rl", nargs="?", help="Results directory (or results.json) of the model after RL.")
    parser.add_argument("--seeds", help="A directory of seed-*/aft and seed-*/rl results, pooled over the seeds.")
    parser.add_argument("--rl-name", default="rl",
                        help="With --seeds: the RL results' directory name in each seed-* (default: rl).")
    parser.add_argument("--out", help="Also write the table here.")
    args = parser.parse_args(argv)
    if (args.seeds is None) == (args.aft is None or args.rl is None):
        parser.error("give AFT and RL results, or --seeds DIR")
    try:
        if args.seeds:
            seeds = sorted(Path(args.seeds).glob("seed-*/"), key=lambda p: int(p.name.split("-")[1]))
            seeds = [s for s in seeds if (s / "aft").is_dir() and (s / args.rl_name).is_dir()]
            if not seeds:
                raise ValueError(f"{args.seeds}: no seed-*/aft and seed-*/{args.rl_name} results")
            print(f"seeds: {', '.join(s.name for s in seeds)}")
            table = seeds_table([(_load(s / "aft"), _load(s / args.rl_name)) for s in seeds])
        else:
            table = compare_table(_load(args.aft), _load(args.rl))
    except ValueError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 2
    print(table, end="")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
