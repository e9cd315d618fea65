"""What `aft eval` measured: rows of accuracy with Wilson intervals and generated tokens, and their files.

`write_results` writes results.json, results.md, accuracy.png (accuracy against N, the full
pipeline's lines and the baselines beside them) and tokens.png (accuracy against generated
tokens per problem, every row); `read_results` reads results.json back (training/seeds.py
combines several seeds' into one table).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from training.plots import LINESTYLES, MARKERS, PALETTE, Level, Point, Series, draw


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (default: 95%)."""
    if total <= 0:
        return 0.0, 1.0
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    # At 0 or `total` right the bound on that side equals p up to rounding, which may land past it.
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


@dataclass
class Row:
    """One line of the results table."""

    method: str
    """What produced the answer, e.g. "AFT, propose-and-aggregate" (the names below)."""
    model: str
    """"sft" or "aft"."""
    proposals: int
    """N: samples voted on or drafts aggregated (1 for a single answer)."""
    rounds: int
    """Aggregation rounds (0: no aggregation). A vote over the proposals of a propose-and-aggregate run
    (AFT_PROPOSAL_MAJORITY) carries that run's rounds: it is measured on the round-0 drafts the run started from."""
    correct: int
    total: int
    tokens: int = 0
    """Completion tokens generated for the row's answers, summed over all problems: a vote's or a best-of-N's
    N samples; every round of a propose-and-aggregate run, the final answer included; round 0 only for a
    vote over a run's proposals. 0: not measured (results written before tokens were counted)."""
    early_exits: list[int] = field(default_factory=list)
    """Problems whose run stopped early, by the round whose drafts agreed; empty without early exit."""
    accuracy: float = 0.0
    ci_low: float = 0.0
    ci_high: float = 0.0
    tokens_per_problem: float = 0.0
    tokens_per_correct: float | None = None
    """None when no answer was right (the cost of a correct answer is unbounded)."""

    def __post_init__(self) -> None:
        self.accuracy = self.correct / self.total if self.total else 0.0
        self.ci_low, self.ci_high = wilson_interval(self.correct, self.total)
        self.tokens_per_problem = self.tokens / self.total if self.total else 0.0
        self.tokens_per_correct = self.tokens / self.correct if self.correct else None


@dataclass
class Results:
    """Everything `aft eval` measured."""

    task: str
    problems: int
    draft_sampling: dict[str, Any]
    final_sampling: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    models: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def find(self, method: str, proposals: int | None = None, rounds: int | None = None) -> Row:
        """The row of `method` (and N, rounds when given); KeyError when there is none."""
        for row in self.rows:
            if row.method == method and proposals in (None, row.proposals) and rounds in (None, row.rounds):
                return row
        raise KeyError((method, proposals, rounds))


SFT_ONE = "SFT, one sample"
SFT_DRAFT = "SFT, one draft"
SFT_GREEDY = "SFT, greedy"
SFT_MAJORITY = "SFT, majority vote"
SFT_ORACLE = "SFT, best of N drafts (pass@N: any draft right)"
AFT_DIRECT = "AFT, answering directly"
AFT_GREEDY = "AFT, greedy"
AFT_PA = "AFT, propose-and-aggregate"
AFT_PROPOSAL_MAJORITY = "AFT, majority vote over the same proposals"
AFT_PROPOSAL_ORACLE = "AFT, best of the same proposals (pass@N: any draft right)"


def early_exit_method(threshold: float) -> str:
    """The method name of propose-and-aggregate stopping when `threshold` of a round's drafts agree."""
    share = "all" if threshold >= 1 else f"{100 * threshold:g}% of the"
    return f"{AFT_PA}, early exit when {share} drafts agree"


def subset_method(k: int) -> str:
    """The method name of propose-and-aggregate whose aggregations each read a random `k` of the N drafts."""
    return f"{AFT_PA}, each aggregation reads K={k} of the N drafts"


def _percent(share: float) -> str:
    return f"{100 * share:.1f}%"


def _exits(row: Row) -> str:
    if not row.early_exits:
        return ""
    by_round = ", ".join(f"round {r}: {_percent(n / row.total)}" for r, n in enumerate(row.early_exits) if n)
    return _percent(sum(row.early_exits) / row.total) + (f" ({by_round})" if by_round else "")


def _tokens(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def markdown_table(results: Results) -> str:
    """The results as a Markdown table, one row per measurement (an early-exit column when any row has one)."""
    exits = any(row.early_exits for row in results.rows)
    lines = ["| method | N | rounds | accuracy | 95% CI (Wilson) | correct / problems | tokens / problem | "
             "tokens / correct |" + (" early exit (share of problems) |" if exits else ""),
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if exits else "")]
    for row in results.rows:
        lines.append(f"| {row.method} | {row.proposals} | {row.rounds} | {_percent(row.accuracy)} | "
                     f"{100 * row.ci_low:.1f}-{100 * row.ci_high:.1f} | {row.correct} / {row.total} | "
                     f"{_tokens(row.tokens_per_problem)} | {_tokens(row.tokens_per_correct)} |"
                     + (f" {_exits(row)} |" if exits else ""))
    return "\n".join(lines) + "\n"


def _point(row: Row, x: float, note: str = "") -> Point:
    return Point(x, row.accuracy, row.ci_low, row.ci_high, note)


def _rounds_label(rounds: int) -> str:
    return f"{rounds} round{'s' if rounds > 1 else ''}"


def accuracy_series(results: Results) -> tuple[list[Series], list[Level]]:
    """accuracy.png: the full pipeline's line per round count, the votes and best-of-N over the drafts it read
    (same colour), the SFT votes and best-of-N; single answers as levels. Early exit and subset rows are
    tokens.png's: here they would hide the lines the task's bar is about."""

    def series(method: str, label: str, rounds: int | None = None, **style: Any) -> Series:
        rows = sorted((r for r in results.rows if r.method == method and rounds in (None, r.rounds)),
                      key=lambda r: r.proposals)
        return Series(label, [_point(r, r.proposals) for r in rows], **style)

    lines: list[Series] = []
    all_rounds = sorted({row.rounds for row in results.rows if row.method == AFT_PA})
    for i, r in enumerate(all_rounds):
        colour = f"C{i}"
        lines += [series(AFT_PA, f"{AFT_PA}, {_rounds_label(r)}", r, color=colour),
                  series(AFT_PROPOSAL_MAJORITY, f"majority vote over the proposals those runs read ({r})", r,
                         color=colour, linestyle="--"),
                  series(AFT_PROPOSAL_ORACLE, f"best of those proposals, pass@N ({r})", r, color=colour,
                         linestyle=":", marker="^")]
    sft = f"C{len(all_rounds)}"
    draft = series(SFT_DRAFT, "")
    vote, oracle = series(SFT_MAJORITY, ""), series(SFT_ORACLE, "")
    lines += [Series("SFT: one draft (N=1), majority vote over N drafts", draft.points + vote.points, sft, "--"),
              Series("SFT: best of N drafts, pass@N", draft.points + oracle.points, sft, ":", "^")]
    levels = [Level(row.method, row.accuracy, colour) for method, colour in
              ((SFT_ONE, "tab:olive"), (AFT_DIRECT, "tab:gray"), (SFT_GREEDY, "tab:brown"))
              for row in results.rows if row.method == method]
    return lines, levels


def token_series(results: Results) -> list[Series]:
    """tokens.png: every row with counted tokens at its generated tokens per problem; one series per method
    and round count (a colour and marker per method, a line style per round count), its points in order of
    N, each marked with its N."""
    groups: dict[tuple[str, int], list[Row]] = {}
    for row in results.rows:
        if row.tokens > 0:  # a log axis has no 0; rows read from older results have no count
            groups.setdefault((row.method, row.rounds), []).append(row)
    methods = list(dict.fromkeys(method for method, _ in groups))
    lines = []
    for (method, rounds), rows in groups.items():
        i = methods.index(method)
        points = [_point(r, r.tokens_per_problem, f"N={r.proposals}") for r in sorted(rows, key=lambda r: r.proposals)]
        style = LINESTYLES[max(rounds - 1, 0) % len(LINESTYLES)] if len(points) > 1 else "none"
        lines.append(Series(f"{method}, {_rounds_label(rounds)}" if rounds else method, points,
                            PALETTE[i % len(PALETTE)], style, MARKERS[i % len(MARKERS)]))
    return lines


def plot(results: Results, path: Path) -> None:
    """accuracy.png: accuracy against N with Wilson 95% error bars (`accuracy_series`)."""
    lines, levels = accuracy_series(results)
    draw(path, lines, levels=levels, xticks=sorted({r.proposals for r in results.rows}),
         title=f"{results.task}: accuracy against N (Wilson 95% intervals)", xlabel="N (proposals per round)",
         ylabel=f"accuracy, % of {results.problems} held-out problems")


def plot_tokens(results: Results, path: Path) -> None:
    """tokens.png: accuracy against generated tokens per problem, log x (`token_series`)."""
    draw(path, token_series(results), log_x=True,
         title=f"{results.task}: accuracy against generated tokens (Wilson 95% intervals)",
         xlabel="completion tokens generated per problem (all samples and rounds; log scale)",
         ylabel=f"accuracy, % of {results.problems} held-out problems")


def write_results(results: Results, out_dir: str | Path) -> dict[str, Path]:
    """Write results.json, results.md, accuracy.png and tokens.png into `out_dir`; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md", "plot": out / "accuracy.png",
             "tokens": out / "tokens.png"}
    paths["json"].write_text(json.dumps(asdict(results), indent=2) + "\n", encoding="utf-8")
    header = (f"# {results.task}: {results.problems} held-out problems\n\n"
              f"Drafts sampled at {_describe(results.draft_sampling)}; final answers and single samples at "
              f"{_describe(results.final_sampling)}. Tokens are completion tokens generated, all samples and "
              f"rounds of a method. Evaluation took {results.seconds:.0f} s.\n\n")
    paths["markdown"].write_text(header + markdown_table(results), encoding="utf-8")
    plot(results, paths["plot"])
    plot_tokens(results, paths["tokens"])
    return paths


def read_results(path: str | Path) -> Results:
    """The Results of a results.json (or of the directory holding one); the derived numbers recomputed."""
    file = Path(path)
    data = json.loads((file / "results.json" if file.is_dir() else file).read_text(encoding="utf-8"))
    known = {f.name for f in fields(Row) if f.init}
    rows = [Row(**{k: v for k, v in row.items() if k in known}) for row in data.pop("rows")]
    return Results(**data, rows=rows)


def _describe(sampling: dict[str, Any]) -> str:
    return f"temperature {sampling['temperature']}, top_p {sampling['top_p']}"
