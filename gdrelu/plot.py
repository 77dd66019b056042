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
    optimizers = list(dict.fromkeys(c.get("optimizer", "gd") for c in cells))
    for optimizer, delta in (
        (o, d) for o in optimizers for d in sorted({c["delta"] for c in cells})
    ):
        rows = sorted(
            (c for c in cells if c["delta"] == delta and c.get("optimizer", "gd") == optimizer),
            key=lambda c: c["width"],
        )
        widths = [c["width"] for c in rows]
        p = [c["p_stuck"] for c in rows]
        label = f"Δ = {delta:g}" if len(optimizers) == 1 else f"{optimizer}, Δ = {delta:g}"
        (line,) = ax.plot(widths, p, marker="o", label=label)
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
    names = ", ".join(optimizers).upper() if len(optimizers) > 1 else optimizers[0].upper()
    ax.set_title(f"{names} on two-layer ReLU nets: P(stuck), 95% Clopper-Pearson")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def comparison_plot(comparisons: Sequence[dict], path: Path) -> None:
    """Paired differences P_a(stuck) - P_b(stuck) against width, one panel per Δ, one line
    per optimizer pair, with the 95% intervals of `stats.paired_comparison` as error bars."""
    deltas = sorted({c["delta"] for c in comparisons})
    fig, axes = plt.subplots(
        1, len(deltas), figsize=(max(6.4, 4.2 * len(deltas)), 4.0), sharey=True, squeeze=False
    )
    pairs = list(dict.fromkeys((c["a"], c["b"]) for c in comparisons))
    for ax, delta in zip(axes[0], deltas, strict=True):
        for a, b in pairs:
            rows = sorted(
                (c for c in comparisons if (c["a"], c["b"]) == (a, b) and c["delta"] == delta),
                key=lambda c: c["width"],
            )
            widths = [c["width"] for c in rows]
            diff = [c["difference"] for c in rows]
            errors = [
                [d - c["ci95"][0] for d, c in zip(diff, rows, strict=True)],
                [c["ci95"][1] - d for d, c in zip(diff, rows, strict=True)],
            ]
            ax.errorbar(widths, diff, yerr=errors, marker="o", capsize=3, label=f"{a} − {b}")
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("width n")
        ax.set_title(f"Δ = {delta:g}")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("P(stuck) difference (paired)")
    axes[0][-1].legend(fontsize="small")
    fig.suptitle("Paired P(stuck) differences, exact 95% intervals (McNemar)", fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
