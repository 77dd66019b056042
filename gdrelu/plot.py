"""Figures of a finished experiment."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def failure_probability_plot(cells: Sequence[dict], path: Path) -> None:
    """P(stuck) against width (log-2 axis), one line per Δ, with 95% interval bands.

    `cells` are summary.json cell records (width, delta, p_stuck, ci95).
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for delta in sorted({c["delta"] for c in cells}):
        rows = sorted((c for c in cells if c["delta"] == delta), key=lambda c: c["width"])
        widths = [c["width"] for c in rows]
        p = [c["p_stuck"] for c in rows]
        (line,) = ax.plot(widths, p, marker="o", label=f"Δ = {delta:g}")
        ax.fill_between(
            widths,
            [c["ci95"][0] for c in rows],
            [c["ci95"][1] for c in rows],
            color=line.get_color(),
            alpha=0.2,
            linewidth=0,
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("width n")
    ax.set_ylabel("P(provably stuck)")
    ax.set_ylim(0.0, 1.0)
    ax.grid(True, alpha=0.3)
    ax.set_title("GD on two-layer ReLU nets: P(stuck), 95% Clopper-Pearson")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
