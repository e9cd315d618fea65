"""Two `aft eval` runs of one task side by side: the AFT-only model and the model after its RL stage.

    python -m training.compare docs/toy/rl/multiplication/seed-0/aft docs/toy/rl/multiplication/seed-0/rl \\
        --out docs/toy/rl/multiplication/seed-0/compare.md

For every propose-and-aggregate row both runs measured (N, rounds, K of N), the accuracy of each with
its Wilson 95% interval, the difference, and generated tokens per correct answer; then the model
answering directly. Both runs must have evaluated the same problems (same --seed and --problems).
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
    direct = [next((r for r in res["rows"] if r["method"] == "AFT, answering directly"), None) for res in (aft, rl)]
    if all(direct):
        a, b = direct
        assert a is not None and b is not None
        lines.append(f"| 1 | 0 | answering directly | {_cell(a)} | {_cell(b)} | "
                     f"{100 * (b['accuracy'] - a['accuracy']):+.1f} | {_per_correct(a)}, {_per_correct(b)} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.compare", description=__doc__.split("\n")[0])
    parser.add_argument("aft", help="Results directory (or results.json) of the AFT-only model.")
    parser.add_argument("rl", help="Results directory (or results.json) of the model after RL.")
    parser.add_argument("--out", help="Also write the table here.")
    args = parser.parse_args(argv)
    loaded = []
    for source in (args.aft, args.rl):
        path = Path(source)
        loaded.append(json.loads((path / "results.json" if path.is_dir() else path).read_text()))
    try:
        table = compare_table(*loaded)
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
