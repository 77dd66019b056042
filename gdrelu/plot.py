"""Figures of a finished experiment and of the Section 10 preset.

Importing this module leaves matplotlib's backend as the caller set it (a notebook's
inline one stays); the `gdrelu` command draws with Agg (`cli.main`)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
from matplotlib import transforms

from gdrelu.stats import clopper_pearson


def failure_probability_plot(
    cells: Sequence[dict], path: Path | BinaryIO, setting: str = ""
) -> None:
    """P(stuck) against width (log-2 axis), one line per Δ, with 95% interval bars and
    bands (`failure_probability_figure`), saved to `path`."""
    fig = failure_probability_figure(cells, setting)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


DPI = 200  # sharp in print at a column's width (120 blurred the legends)


def failure_probability_figure(cells: Sequence[dict], setting: str = ""):
    """The figure of `failure_probability_plot`: each cell's 95% interval as an error bar
    (a band joins them across widths; one width has only its bars). Lines sharing a width
    are set apart a little along the axis; a cell with unfinished runs (certificate rule)
    has an open marker.

    `cells` are summary.json cell records (width, delta, p_stuck, ci95, stuck_rule, and
    status_counts where known): the axis says "provably" only where every cell counts
    certified runs. `setting` (`setting_line`) is the title's line on data and init.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    optimizers = list(dict.fromkeys(c.get("optimizer", "gd") for c in cells))
    deltas = sorted({c["delta"] for c in cells})
    lines = [
        (optimizer, delta, rows)
        for optimizer in optimizers
        for delta in deltas
        if (rows := _rows(cells, optimizer, delta))  # else an optimizer without this Δ
    ]
    for k, (optimizer, delta, rows) in enumerate(lines):
        widths = _dodged([c["width"] for c in rows], k, len(lines))
        p = np.array([c["p_stuck"] for c in rows])
        low, high = np.array([c["ci95"] for c in rows]).T
        label = f"Δ = {delta:g}" if len(optimizers) == 1 else f"{optimizer}, Δ = {delta:g}"
        # one optimizer: a colour per Δ; several: a colour per optimizer (the pairs to
        # compare), a marker and line style per Δ
        kind, shade = deltas.index(delta), optimizers.index(optimizer)
        if len(optimizers) == 1:
            kind, shade = 0, deltas.index(delta)
        color = f"C{shade % 10}"
        style = dict(marker=_MARKERS[kind % 5], linestyle=_LINES[kind % 4], color=color)
        ax.errorbar(widths, p, yerr=[p - low, high - p], capsize=3, label=label, **style)
        # fainter bands as lines multiply: where all overlap, about half opaque at most
        alpha = min(0.2, 0.6 / len(lines))
        ax.fill_between(widths, low, high, color=color, alpha=alpha, linewidth=0)
        _mark_cells(
            ax, widths, p, style, [_unfinished(c) for c in rows], [_diverged(c) for c in rows]
        )
    _mark_legend(ax, any(map(_unfinished, cells)), any(map(_diverged, cells)))
    _log2_axis(ax, [c["width"] for c in cells])
    rules = {c.get("stuck_rule", "certificate") for c in cells}
    quantity = "P(provably stuck)" if rules == {"certificate"} else "P(stuck)"
    ax.set_ylabel(quantity)
    ax.set_ylim(-0.03, 1.03)  # a cell at P = 0 or 1 whole, not cut in half by the frame
    ax.grid(True, alpha=0.3)
    ax.set_title(_failure_title(cells, optimizers, quantity, setting), fontsize="medium")
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i] in _MARK_LABELS)  # last
    where = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)} if len(lines) > 6 else {}
    ax.legend(  # outside when long: it would cover the bars
        [handles[i] for i in order], [labels[i] for i in order], fontsize="small", **where
    )
    fig.tight_layout()
    return fig


def _failure_title(cells: Sequence[dict], optimizers, quantity: str, setting: str) -> str:
    """The optimizers, the `setting` lines, what "stuck" counts where it is not the
    certificate alone, then the quantity, its intervals and the runs per cell."""
    names = ", ".join(_DISPLAY.get(o, o) for o in optimizers)
    head = [f"{names} on two-layer ReLU nets:", *([setting] if setting else [])]
    meaning = _stuck_meaning(cells)
    title = "\n".join([*head, *([meaning] if meaning else []), f"{quantity}, 95% Clopper-Pearson"])
    title += _run_counts(cells)
    if any(c.get("ci95_nominal") for c in cells):  # run counts chosen by the outcomes
        title += " (nominal: --target-halfwidth)"
    return title


_DISPLAY = {"gd": "GD", "sgd": "SGD", "adam": "Adam"}
_MEANING = {"certificate": "certified or degenerate", "final": "final loss not below L_lin"}


def _stuck_meaning(cells: Sequence[dict]) -> str:
    """What a cell's "stuck" counts under its rule where that is the final network's
    (`compare`'s, GD's cells too: "stuck = final loss not below L_lin"), or where the
    rules differ between the cells' optimizers (results of several runs drawn together):
    "stuck = gd: ...; adam: ..."; "" for the certificate alone, which the axis calls
    "provably"."""
    by_rule: dict[str, dict[str, None]] = {}  # rule -> its optimizers, in order
    for c in cells:
        by_rule.setdefault(c.get("stuck_rule", "certificate"), {})[c.get("optimizer", "gd")] = None
    if set(by_rule) <= {"certificate"}:  # or no cells
        return ""
    owners = [name for names in by_rule.values() for name in names]
    if len(by_rule) == 1 or len(owners) != len(set(owners)):  # or an optimizer under both
        return "stuck = " + "; ".join(_MEANING[r] for r in by_rule)
    return "stuck = " + "; ".join(f"{', '.join(n)}: {_MEANING[r]}" for r, n in by_rule.items())


def _run_counts(cells: Sequence[dict]) -> str:
    """ ", N runs per cell" (or "N-M" where cells differ, as grown ones do); "" unknown."""
    counts = sorted({c["runs"] for c in cells if "runs" in c})
    if not counts:
        return ""
    return f", {counts[0]}{f'-{counts[-1]}' if len(counts) > 1 else ''} runs per cell"


UNFINISHED_LABEL = "open: some runs unfinished"
DIVERGED_LABEL = "×: some runs diverged"
_MARK_LABELS = (UNFINISHED_LABEL, DIVERGED_LABEL)


def _rows(cells: Sequence[dict], optimizer: str, delta: float) -> list[dict]:
    """The cells of one line, by width."""
    rows = (c for c in cells if c["delta"] == delta and c.get("optimizer", "gd") == optimizer)
    return sorted(rows, key=lambda c: c["width"])


def _unfinished(cell: dict) -> bool:
    """Whether some of the cell's runs used their whole step budget undecided, where that
    leaves its P(stuck) a lower bound: under the certificate rule (the final-network rule,
    `compare`'s, judges such runs by their last network)."""
    certified = cell.get("stuck_rule", "certificate") == "certificate"
    return certified and cell.get("status_counts", {}).get("unfinished", 0) > 0


def _mark_cells(ax, widths: np.ndarray, p: np.ndarray, style: dict, open_, lost=()) -> None:
    """An open marker at each point of a line where `open_` (its runs unfinished), a × where
    `lost` (some diverged)."""
    open_, lost = np.flatnonzero(open_), np.flatnonzero(lost)
    if open_.size:
        ax.plot(widths[open_], p[open_], linestyle="none", marker=style["marker"],
                color=style["color"], markerfacecolor="white", zorder=3)  # fmt: skip
    if lost.size:
        ax.plot(widths[lost], p[lost], linestyle="none", marker="x", markersize=9,
                color="black", zorder=4)  # fmt: skip


def _mark_legend(ax, some_open: bool, some_lost: bool) -> None:
    """The legend's entries for `_mark_cells`' marks, where there are some."""
    if some_open:
        ax.plot([], [], "o", color="black", markerfacecolor="white", label=UNFINISHED_LABEL)
    if some_lost:
        ax.plot([], [], "x", color="black", markersize=9, label=DIVERGED_LABEL)


def _diverged(cell: dict) -> bool:
    """Whether some of the cell's runs diverged (neither stuck nor crossed: P(stuck) = 0
    of such a cell says nothing of the kinks)."""
    return cell.get("status_counts", {}).get("diverged", 0) > 0


def _dodged(widths: Sequence[int], k: int, count: int) -> np.ndarray:
    """Line k of `count`'s widths moved apart from the others' on the log-2 axis, by at
    most 0.15 of an octave either way, so bars at one width do not hide each other."""
    shift = (k - (count - 1) / 2) * min(0.04, 0.3 / count)
    return np.asarray(widths, float) * 2.0**shift


def setting_line(spec: dict) -> str:
    """What a figure's title says of a spec (`ExperimentSpec.to_dict`): the data set, the
    initialization, the biases and a LeakyReLU slope; where the spec gives them, a second
    line with the step size (rule or value, and factor), the step budget, early stopping
    where on, and the dtype."""
    data = spec.get("data", "six-points")
    if data == "file" and spec.get("data_file"):
        data = Path(spec["data_file"]).name
    if spec.get("dim"):
        data += f" (d = {spec['dim']})"
    line = f"data {data}, init {spec.get('init', 'he')}, biases {spec.get('bias_init', 'zero')}"
    if spec.get("alpha"):
        line += f", LeakyReLU α = {spec['alpha']:g}"
    if "seed" in spec:
        line += f", seed {spec['seed']}"
    if "step_size" not in spec or "max_checks" not in spec:
        return line
    step = spec["step_size"]
    step = f"{step:g}" if isinstance(step, int | float) else str(step)
    if spec.get("step_factor", 1.0) != 1.0:
        step += f" × {spec['step_factor']:g}"
    steps = spec.get("check_every", 1000) * spec["max_checks"]
    stopping = ", early stopping" if spec.get("early_stopping") else ""
    return f"{line}\nstep size {step}, ≤ {steps:,} steps{stopping}, {spec.get('dtype', 'float64')}"


_MARKERS, _LINES = "os^Dv", ("-", "--", ":", "-.")


def _log2_axis(ax, values, label: str = "width n") -> None:
    """Width n (or `label`'s quantity, such as the input dimension d) on a log-2 axis,
    ticked at the `values` run, as plain numbers (not 2⁴)."""
    ax.set_xscale("log", base=2)
    ax.set_xlabel(label)
    ticks = sorted(set(values))
    ax.set_xticks(ticks, [str(w) for w in ticks])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    if len(ticks) == 1:  # else the lines' small offsets would span the whole axis
        ax.set_xlim(ticks[0] / math.sqrt(2), ticks[0] * math.sqrt(2))


def comparison_plot(
    comparisons: Sequence[dict], path: Path | BinaryIO, setting: str = "", cells=()
) -> None:
    """`comparison_figure` saved to `path`."""
    fig = comparison_figure(comparisons, setting, cells)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def comparison_figure(comparisons: Sequence[dict], setting: str = "", cells=()):
    """Paired differences P_a(stuck) - P_b(stuck) against width, one panel per Δ, one line
    per optimizer pair (set apart a little along the axis), with the 95% intervals of
    `stats.paired_comparison` as error bars (`comparisons`: summary.json's records,
    `analysis.comparisons`); `setting` (`setting_line`) is a line of the title. A pair
    whose optimizers' `cells` (summary.json's) have unfinished runs under the certificate
    rule has an open marker, one with diverged runs a ×, as in the failure figure."""
    unfinished, diverged = (
        {(c.get("optimizer", "gd"), c["width"], c["delta"]) for c in cells if marked(c)}
        for marked in (_unfinished, _diverged)
    )
    deltas = sorted({c["delta"] for c in comparisons})
    fig, axes = plt.subplots(
        1, len(deltas), figsize=(max(6.4, 4.2 * len(deltas)), 4.0), sharey=True, squeeze=False
    )
    pairs = list(dict.fromkeys((c["a"], c["b"]) for c in comparisons))
    for ax, delta in zip(axes[0], deltas, strict=True):
        for k, (a, b) in enumerate(pairs):
            rows = sorted(
                (c for c in comparisons if (c["a"], c["b"]) == (a, b) and c["delta"] == delta),
                key=lambda c: c["width"],
            )
            widths = _dodged([c["width"] for c in rows], k, len(pairs))
            diff = [c["difference"] for c in rows]
            errors = [
                [d - c["ci95"][0] for d, c in zip(diff, rows, strict=True)],
                [c["ci95"][1] - d for d, c in zip(diff, rows, strict=True)],
            ]
            style = {"marker": _MARKERS[k % 5], "linestyle": _LINES[k % 4], "color": f"C{k % 10}"}
            ax.errorbar(widths, diff, yerr=errors, capsize=3, label=f"{a} − {b}", **style)
            both = [{(a, c["width"], delta), (b, c["width"], delta)} for c in rows]
            open_, lost = (
                [bool(pair & marked) for pair in both] for marked in (unfinished, diverged)
            )
            _mark_cells(ax, widths, np.asarray(diff), style, open_, lost)
        ax.axhline(0.0, color="black", linewidth=0.8)
        _log2_axis(ax, [c["width"] for c in comparisons if c["delta"] == delta])
        ax.set_title(f"Δ = {delta:g}")
        ax.grid(True, alpha=0.3)
    (a, b), *others = pairs
    axes[0][0].set_ylabel(
        "P_a(stuck) − P_b(stuck), paired" if others else f"P(stuck | {a}) − P(stuck | {b})"
    )
    drawn = {(o, c["width"], c["delta"]) for c in comparisons for o in (c["a"], c["b"])}
    _mark_legend(axes[0][-1], bool(unfinished & drawn), bool(diverged & drawn))
    axes[0][-1].legend(fontsize="small")
    title = "Paired P(stuck) differences, Newcombe 95% intervals"
    if any(c.get("ci95_nominal") for c in comparisons):  # pair counts chosen by the outcomes
        title += " (nominal: --target-halfwidth)"
    lines = [title, *([setting] if setting else []), *filter(None, [_stuck_meaning(cells)])]
    fig.suptitle("\n".join(lines), fontsize="medium")
    fig.tight_layout()
    return fig


def relative_rmse_plot(best: Sequence[dict], path: Path | BinaryIO) -> None:
    """Section 10: relative test RMSE against d, one panel per (init, optimizer), one colour
    per bias init (circles: P_d against d, squares: P_ex at d = 1). `best` are the rows of
    `section10.best_step_sizes`."""
    inits = sorted({r["init"] for r in best})
    optimizers = list(dict.fromkeys(r["optimizer"] for r in best))
    biases = list(dict.fromkeys(r["bias_init"] for r in best))
    colours = {b: plt.get_cmap("tab10")(i % 10) for i, b in enumerate(biases)}
    fig, axes = plt.subplots(
        len(inits), len(optimizers), figsize=(3.8 * len(optimizers), 3.2 * len(inits)),
        sharex=True, sharey=True, squeeze=False,
    )  # fmt: skip
    for (i, init), (j, optimizer) in itertools.product(enumerate(inits), enumerate(optimizers)):
        ax = axes[i][j]
        for data, (k, bias_init) in itertools.product(
            sorted({r["data"] for r in best}), enumerate(biases)
        ):
            panel = (init, optimizer, data, bias_init)
            rows = sorted((r for r in best if _panel(r) == panel), key=lambda r: r["dim"])
            # P_ex's lone squares side by side just left of d = 1 (else they hid each
            # other, and P_d's circles there); P_d's lines at their d
            offset = 0.0 if data == "radial" else -0.1 - 0.4 * (len(biases) - k) / len(biases)
            _relative_rmse_line(ax, rows, colours[bias_init], offset)
        _log2_axis(ax, [r["dim"] for r in best], "input dimension d" if i == len(inits) - 1 else "")
        if any(0 < r["relative_test_rmse"] < math.inf for r in best):  # else: all diverged
            ax.set_yscale("log")
        ax.set_title(f"{init}, {optimizer}", fontsize="medium")
        ax.grid(True, alpha=0.3)
        if j == 0:
            ax.set_ylabel("test RMSE / best at (data, d)")
    fig.legend(  # beside the panels: inside one it hid lines (he, adam's unif-pos)
        *axes[0][-1].get_legend_handles_labels(), loc="center left", bbox_to_anchor=(1.0, 0.5),
        fontsize="x-small", title="bias init\n(■ P_ex;\n× at the top:\ndiverged)",
        title_fontsize="x-small",
    )  # fmt: skip
    fig.suptitle("Section 10: test RMSE at the best validation check, best step size")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _panel(row: dict) -> tuple:
    return row["init"], row["optimizer"], row["data"], row["bias_init"]


def _relative_rmse_line(ax, rows: Sequence[dict], colour, offset: float = 0.0) -> None:
    """One bias init's rows of one data set (sorted by d), `offset` octaves off their d,
    labelled on P_d only."""
    if not rows:
        return
    dims = np.array([r["dim"] for r in rows], float) * 2.0**offset
    radial = rows[0]["data"] == "radial"
    relative = np.array([r["relative_test_rmse"] for r in rows], float)
    # ± the test RMSE's standard error over runs, on the same scale (the best's own is not
    # propagated)
    scale = np.array([r["relative_test_rmse"] / r["test_rmse"] if r.get("test_rmse") else np.nan
                      for r in rows])  # fmt: skip
    error = np.array([r.get("test_rmse_se", np.nan) for r in rows], float) * scale
    ax.errorbar(
        dims,
        relative,
        yerr=np.where(np.isfinite(error) & np.isfinite(relative), error, 0.0),
        marker="o" if radial else "s",
        linestyle="-" if len(rows) > 1 else "none",
        color=colour,
        capsize=2,
        label=rows[0]["bias_init"] if radial else None,
    )
    lost = dims[~((relative > 0) & (relative < math.inf))]
    if lost.size:  # diverged (∞) or undefined: a log axis would drop them without a mark
        top = transforms.blended_transform_factory(ax.transData, ax.transAxes)
        ax.plot(lost, [0.97] * lost.size, "x", color=colour, transform=top, clip_on=False)


def fraction_plot(lines: dict, ylabel: str, path: Path | BinaryIO, title: str = "") -> None:
    """Fractions against width (log-2 axis), one line per key of `lines` (a step budget:
    {budget: [(width, count, runs), ...]}), each with its 95% Clopper-Pearson interval as
    an error bar; `title` (`setting_line`) above."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for k, (budget, points) in enumerate(sorted(lines.items())):
        widths, counts, runs = (np.array(v) for v in zip(*sorted(points), strict=True))
        fractions = counts / runs
        low, high = clopper_pearson(counts, runs)
        errors = [fractions - low, high - fractions]
        x = _dodged(widths, k, len(lines))  # as the failure figure's lines: bars apart
        ax.errorbar(x, fractions, yerr=errors, marker="o", capsize=3, label=f"≤ {budget:g} steps")
    _log2_axis(ax, [w for points in lines.values() for w, *_ in points])
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.03, 1.03)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(f"{title}\n95% Clopper-Pearson", fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
