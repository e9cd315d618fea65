"""Several runs of `aft eval` (one per seed) in one Markdown table: the mean and each seed.

`python -m training.seeds DIR1 DIR2 DIR3 --out FILE.md` reads each DIR's results.json
(training/results.py) and writes, per method, N and rounds, the mean accuracy, each seed's
accuracy, the Wilson 95% interval of all seeds' problems pooled, and the tokens generated per
problem and per correct answer over all seeds.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from training.results import Results, Row, read_results, wilson_interval

Key = tuple[str, int, int]
"""A row's identity across seeds: method, N, rounds."""


def _key(row: Row) -> Key:
    return row.method, row.proposals, row.rounds


def combined_table(runs: Sequence[Results], names: Sequence[str]) -> str:
    """One Markdown table over `runs` (labelled `names`); a method missing from a run shows "–" there
    and is left out of the mean and the pooled numbers."""
    order: list[Key] = []
    by_run: list[dict[Key, Row]] = []
    for results in runs:
        keyed = {_key(row): row for row in results.rows}
        order += [key for key in keyed if key not in order]
        by_run.append(keyed)
    lines = ["| method | N | rounds | accuracy, mean | " + " | ".join(names) + " | all seeds: 95% CI (Wilson) | "
             "tokens / problem | tokens / correct |",
             "| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in names) + " | ---: | ---: | ---: |"]
    for key in order:
        rows = [run.get(key) for run in by_run]
        present = [row for row in rows if row is not None]
        correct, total = sum(r.correct for r in present), sum(r.total for r in present)
        tokens = sum(r.tokens for r in present)
        low, high = wilson_interval(correct, total)
        mean = sum(r.accuracy for r in present) / len(present)
        seeds = " | ".join("–" if row is None else f"{100 * row.accuracy:.1f}%" for row in rows)
        per_problem = f"{tokens / total:.1f}" if total and tokens else "–"
        per_correct = f"{tokens / correct:.1f}" if correct and tokens else "–"
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {100 * mean:.1f}% | {seeds} | "
                     f"{100 * low:.1f}-{100 * high:.1f} | {per_problem} | {per_correct} |")
    return "\n".join(lines) + "\n"


def combine(dirs: Sequence[str | Path]) -> str:
    """The Markdown page of the results.json in each of `dirs`: a heading, then `combined_table`."""
    runs = [read_results(d) for d in dirs]
    tasks = sorted({r.task for r in runs})
    problems = ", ".join(str(r.problems) for r in runs)
    return (f"# {', '.join(tasks)}: {len(runs)} seeds\n\n"
            f"Held-out problems per seed: {problems}. Accuracy per seed and its mean; the interval pools every "
            f"seed's problems; tokens are completion tokens generated, over all seeds.\n\n"
            + combined_table(runs, [Path(d).name for d in dirs]))


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m training.seeds") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Combine several seeds' `aft eval` results "
                                                            "(results.json) into one Markdown table.")
    parser.add_argument("dirs", nargs="+", help="Directories holding results.json (one per seed).")
    parser.add_argument("--out", help="Write the table here too (default: print it only).")
    args = parser.parse_args(argv)
    missing = [d for d in args.dirs if not (Path(d) / "results.json").is_file()]
    if missing:
        print(f"{prog}: no results.json in {', '.join(missing)}", file=sys.stderr)
        return 2
    page = combine(args.dirs)
    print(page, end="")
    if args.out:
        Path(args.out).write_text(page, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
