"""Writing an experiment's results: the per-run table, summary.json and the figure.

Every file is written to a temporary name in the output directory and renamed into
place, so a crash never leaves a half-written file under its final name.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gdrelu.engine import Status
from gdrelu.experiment import CellResult, ExperimentSpec, status_counts
from gdrelu.plot import failure_probability_plot
from gdrelu.stats import failure_probability

RUN_COLUMNS = (
    "run_id",
    "seed",
    "width",
    "delta",
    "optimizer",
    "index",
    "status",
    "stop_step",
    "final_loss",
    "max_kink",
    "step_size",
)
STUCK_STATUSES = (Status.STUCK, Status.A_DEGENERATE, Status.X_DEGENERATE)


def cell_summary(cell_result: CellResult) -> dict[str, Any]:
    """One summary.json cell: counts by status, P(stuck) and its 95% interval.

    Stuck means certified by the criterion or degenerate (PAPER.md, "Outcome of a run").
    """
    cell, status = cell_result.cell, cell_result.result.status
    stuck = int(np.isin(status, STUCK_STATUSES).sum())
    p, ci = failure_probability(stuck, status.size)
    return {
        "width": int(cell.width),
        "delta": float(cell.delta),
        "optimizer": cell.spec.optimizer,
        "cell_id": cell.cell_id,
        "runs": int(status.size),
        "status_counts": status_counts(status),
        "p_stuck": p,
        "ci95": list(ci),
    }


def run_rows(cell_result: CellResult) -> list[tuple]:
    cell, res = cell_result.cell, cell_result.result
    spec = cell.spec
    return [
        (
            f"{cell.cell_id}-{i}",
            spec.seed,
            cell.width,
            cell.delta,
            spec.optimizer,
            i,
            Status(int(res.status[i])).label,
            int(res.stop_step[i]),
            repr(float(res.final_loss[i])),
            repr(float(res.max_kink[i])),
            repr(float(cell_result.step_size[i])),
        )
        for i in range(res.status.size)
    ]


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_results(
    out_dir: Path,
    spec: ExperimentSpec,
    cell_results: Sequence[CellResult],
    *,
    seconds: float,
    backend: str,
) -> dict[str, Any]:
    """Write runs.csv, summary.json and failure_probability.png; return the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(RUN_COLUMNS)
    for cell_result in cell_results:
        writer.writerows(run_rows(cell_result))
    _atomic_write(out_dir / "runs.csv", text.getvalue().encode())

    summary = {
        "cells": [cell_summary(c) for c in cell_results],
        "seconds": seconds,
        "backend": backend,
        "spec": spec.to_dict(),
    }
    _atomic_write(out_dir / "summary.json", json.dumps(summary, indent=2).encode())
    tmp_png = out_dir / ".failure_probability.png.tmp.png"
    failure_probability_plot(summary["cells"], tmp_png)
    os.replace(tmp_png, out_dir / "failure_probability.png")
    return summary


def format_table(cells: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of summary cells: runs, crossed, stuck, other, P(stuck) [95% CI]."""
    header = (
        f"{'width':>6} {'delta':>6} {'runs':>6} {'crossed':>8} {'stuck':>6} {'other':>6}"
        "  P(stuck) [95% CI]"
    )
    lines = [header]
    for c in cells:
        counts = c["status_counts"]
        stuck = sum(counts[s.label] for s in STUCK_STATUSES)
        crossed = counts["crossed"]
        other = c["runs"] - stuck - crossed
        lo, hi = c["ci95"]
        lines.append(
            f"{c['width']:>6} {c['delta']:>6g} {c['runs']:>6} {crossed:>8} {stuck:>6} {other:>6}"
            f"  {c['p_stuck']:.3f} [{lo:.3f}, {hi:.3f}]"
        )
    return "\n".join(lines)
