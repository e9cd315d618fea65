"""Drawing `aft eval`'s plots: series of accuracies with Wilson 95% error bars, written as PNG.

What to draw (which rows, against what) is training/results.py's; this module only knows
points, series and axes, so that each plot there is a list of series.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

PALETTE = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
           "tab:olive", "tab:cyan", "navy", "darkgoldenrod", "lime", "magenta", "teal", "black", "salmon", "indigo",
           "darkkhaki", "slategray")
"""Colours told apart on one plot, for more series than matplotlib's cycle of ten."""
MARKERS = "osD^v<>pP*Xhd"
LINESTYLES = ("-", "--", ":", "-.")


@dataclass(frozen=True)
class Point:
    """One measurement: `accuracy` in [0, 1] with its interval, at `x`."""

    x: float
    accuracy: float
    low: float
    high: float
    note: str = ""
    """Written beside the point (e.g. "N=5"); empty: nothing."""


@dataclass
class Series:
    """Points drawn as one line (in the order given) under one legend entry."""

    label: str
    points: list[Point] = field(default_factory=list)
    color: str | None = None
    """A matplotlib colour ("C0", "tab:gray"); None: the next of the cycle."""
    linestyle: str = "-"
    marker: str = "o"


@dataclass(frozen=True)
class Level:
    """A single accuracy drawn as a horizontal line across the plot (a baseline without an x)."""

    label: str
    accuracy: float
    color: str


def draw(path: Path, series: Sequence[Series], *, title: str, xlabel: str, ylabel: str, log_x: bool = False,
         xticks: Sequence[float] = (), levels: Sequence[Level] = ()) -> None:
    """Write `series` (and `levels`) as one PNG plot to `path`, the legend beside it; accuracies in percent."""
    import matplotlib

    matplotlib.use("Agg")  # no display here
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5))
    for line in series:
        if not line.points:
            continue
        xs = [p.x for p in line.points]
        ys = [100 * p.accuracy for p in line.points]
        errors = [[100 * (p.accuracy - p.low) for p in line.points],
                  [100 * (p.high - p.accuracy) for p in line.points]]
        ax.errorbar(xs, ys, yerr=errors, label=line.label, capsize=3, marker=line.marker,
                    linestyle=line.linestyle, color=line.color)
        for point, y in zip(line.points, ys, strict=True):
            if point.note:
                ax.annotate(point.note, (point.x, y), xytext=(3, 3), textcoords="offset points", fontsize=6)
    for level in levels:
        ax.axhline(100 * level.accuracy, color=level.color, linewidth=1, linestyle="-.", label=level.label)
    if log_x:
        ax.set_xscale("log")
    if xticks:
        ax.set_xticks(list(xticks))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both" if log_x else "major")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the plot, off the lines
    else:
        ax.text(0.5, 0.5, "nothing to draw", transform=ax.transAxes, ha="center")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
