"""What `aft eval` measured: rows of accuracy with Wilson intervals, and the files they are written to.

`write_results` writes results.json, results.md and accuracy.png (accuracy against N, one
line per round count, the baselines beside them).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (default: 95%)."""
    if total <= 0:
        return 0.0, 1.0
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Row:
    """One line of the results table."""

    method: str
    """What produced the answer, e.g. "AFT propose-and-aggregate"."""
    model: str
    """"sft" or "aft"."""
    proposals: int
    """N: samples voted on or drafts aggregated (1 for a single answer)."""
    rounds: int
    """Aggregation rounds (0: no aggregation). A vote over the proposals of a propose-and-aggregate run
    (AFT_PROPOSAL_MAJORITY) carries that run's rounds: it is measured on the round-0 drafts the run started from."""
    correct: int
    total: int
    accuracy: float = 0.0
    ci_low: float = 0.0
    ci_high: float = 0.0

    def __post_init__(self) -> None:
        self.accuracy = self.correct / self.total if self.total else 0.0
        self.ci_low, self.ci_high = wilson_interval(self.correct, self.total)


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
AFT_DIRECT = "AFT, answering directly"
AFT_GREEDY = "AFT, greedy"
AFT_PA = "AFT, propose-and-aggregate"
AFT_PROPOSAL_MAJORITY = "AFT, majority vote over the same proposals"


def markdown_table(results: Results) -> str:
    """The results as a Markdown table, one row per measurement."""
    lines = ["| method | N | rounds | accuracy | 95% CI (Wilson) | correct / problems |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in results.rows:
        lines.append(f"| {row.method} | {row.proposals} | {row.rounds} | {100 * row.accuracy:.1f}% | "
                     f"{100 * row.ci_low:.1f}-{100 * row.ci_high:.1f} | {row.correct} / {row.total} |")
    return "\n".join(lines) + "\n"


def plot(results: Results, path: Path) -> None:
    """Accuracy against N with Wilson 95% error bars: one line per round count, the baselines beside them."""
    import matplotlib

    matplotlib.use("Agg")  # no display here
    import matplotlib.pyplot as plt

    def series(method: str, rounds: int | None = None) -> list[Row]:
        return sorted((r for r in results.rows if r.method == method and rounds in (None, r.rounds)),
                      key=lambda r: r.proposals)

    def draw(rows: list[Row], label: str, **style: Any) -> Any:
        """Plot `rows` against N; returns the line's colour (None when there is nothing to draw)."""
        if not rows:
            return None
        xs = [r.proposals for r in rows]
        ys = [100 * r.accuracy for r in rows]
        errors = [[100 * (r.accuracy - r.ci_low) for r in rows], [100 * (r.ci_high - r.accuracy) for r in rows]]
        return ax.errorbar(xs, ys, yerr=errors, label=label, capsize=3, marker="o", **style).lines[0].get_color()

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for r in sorted({row.rounds for row in results.rows if row.method == AFT_PA}):
        line = draw(series(AFT_PA, r), f"AFT propose-and-aggregate, {r} round{'s' if r > 1 else ''}")
        draw(series(AFT_PROPOSAL_MAJORITY, r), "majority vote over the proposals those runs read",
             linestyle="--", color=line)
    sft_votes = series(SFT_DRAFT) + series(SFT_MAJORITY)
    draw(sft_votes, "SFT: one draft (N=1), majority vote over N drafts", linestyle=":")
    for method, style in ((SFT_ONE, "tab:olive"), (AFT_DIRECT, "tab:gray"), (SFT_GREEDY, "tab:brown")):
        for row in series(method):
            ax.axhline(100 * row.accuracy, color=style, linewidth=1, linestyle="-.", label=method)
    ax.set_xlabel("N (proposals per round)")
    ax.set_ylabel(f"accuracy, % of {results.problems} held-out problems")
    ax.set_title(f"{results.task}: accuracy against N (Wilson 95% intervals)", fontsize=10)
    ax.set_xticks(sorted({r.proposals for r in results.rows}))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the plot, off the lines
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(results: Results, out_dir: str | Path) -> dict[str, Path]:
    """Write results.json, results.md and accuracy.png into `out_dir`; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md", "plot": out / "accuracy.png"}
    paths["json"].write_text(json.dumps(asdict(results), indent=2) + "\n", encoding="utf-8")
    header = (f"# {results.task}: {results.problems} held-out problems\n\n"
              f"Drafts sampled at {_describe(results.draft_sampling)}; final answers and single samples at "
              f"{_describe(results.final_sampling)}. Evaluation took {results.seconds:.0f} s.\n\n")
    paths["markdown"].write_text(header + markdown_table(results), encoding="utf-8")
    plot(results, paths["plot"])
    return paths


def _describe(sampling: dict[str, Any]) -> str:
    return f"temperature {sampling['temperature']}, top_p {sampling['top_p']}"
