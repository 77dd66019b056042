"""Writing an experiment's results: the per-run table, summary.json and the figure, and
the unit store that makes a run resumable.

Every file is written to a temporary name in the output directory and renamed into
place, so a crash never leaves a half-written file under its final name.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gdrelu.engine import Status
from gdrelu.experiment import (
    CellResult,
    ExperimentSpec,
    status_counts,
    stuck_runs,
)
from gdrelu.plot import comparison_plot, failure_probability_plot
from gdrelu.stats import failure_probability, paired_comparison

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
    "pattern_change_step",
    "linear_threshold",
    "escaped",
    "best_validation_loss",
    "test_loss_at_best",
    "best_step",
)


def cell_summary(cell_result: CellResult) -> dict[str, Any]:
    """One summary.json cell: counts by status, P(stuck) and its 95% interval (`stuck_runs`;
    PAPER.md, "Outcome of a run"), and the counts of both detectors."""
    cell, res = cell_result.cell, cell_result.result
    stuck = int(stuck_runs(cell_result).sum())
    p, ci = failure_probability(stuck, res.status.size)
    return {
        "width": int(cell.width),
        "delta": float(cell.delta),
        "optimizer": cell.spec.optimizer,
        "cell_id": cell.cell_id,
        "runs": int(res.status.size),
        "status_counts": status_counts(res.status),
        "stuck_rule": "final" if cell.spec.final_stuck_rule else "certificate",
        "stuck": stuck,
        "p_stuck": p,
        "ci95": list(ci),
        "detectors": {
            "pattern_changed": int(np.sum(res.pattern_change_step >= 0)),
            "escaped_final": int(np.sum(res.escaped)),
        },
    }


def comparisons(cell_results: Sequence[CellResult]) -> list[dict[str, Any]]:
    """Paired differences P_a(stuck) - P_b(stuck) for every pair of optimizers a before b
    and every (width, Δ) cell they share, with the exact McNemar test (`stats`)."""
    by_cell: dict[tuple, dict[str, CellResult]] = {}
    for cr in cell_results:
        by_cell.setdefault((cr.cell.width, cr.cell.delta), {})[cr.cell.spec.optimizer] = cr
    out = []
    for (width, delta), per_optimizer in by_cell.items():
        names = list(per_optimizer)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                pair = paired_comparison(stuck_runs(per_optimizer[a]), stuck_runs(per_optimizer[b]))
                out.append({"a": a, "b": b, "width": int(width), "delta": float(delta), **pair})
    return out


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
            int(res.pattern_change_step[i]),
            repr(float(res.linear_threshold[i])),
            bool(res.escaped[i]),
            repr(float(res.best_validation_loss[i])),
            repr(float(res.test_loss_at_best[i])),
            int(res.best_step[i]),
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
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write runs.csv, summary.json and failure_probability.png (and comparison.png when
    `extra` holds "comparisons"); return the summary. `extra` is added to the summary."""
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
        "peak_memory": peak_memory(),
        "spec": spec.to_dict(),
        **(extra or {}),
    }
    _atomic_write(out_dir / "summary.json", json.dumps(summary, indent=2).encode())
    tmp_png = out_dir / ".failure_probability.png.tmp.png"
    failure_probability_plot(summary["cells"], tmp_png)
    os.replace(tmp_png, out_dir / "failure_probability.png")
    if summary.get("comparisons"):
        tmp_png = out_dir / ".comparison.png.tmp.png"
        comparison_plot(summary["comparisons"], tmp_png)
        os.replace(tmp_png, out_dir / "comparison.png")
    return summary


def peak_memory() -> dict[str, int | None]:
    """Peak resident memory of this process (bytes) and, where JAX reports it, the peak
    in use on the first device."""
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    host = rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB
    import jax

    stats = jax.devices()[0].memory_stats() or {}  # None on CPU
    return {"host_peak_rss_bytes": int(host), "device_peak_bytes": stats.get("peak_bytes_in_use")}


def format_table(cells: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of summary cells: runs, crossed, stuck, other, P(stuck) [95% CI]."""
    header = (
        f"{'optimizer':>9} {'width':>6} {'delta':>6} {'runs':>6} {'crossed':>8} {'stuck':>6}"
        f" {'other':>6}  P(stuck) [95% CI]"
    )
    lines = [header]
    for c in cells:
        counts = c["status_counts"]
        stuck = c["stuck"]
        crossed = counts["crossed"]
        other = c["runs"] - stuck - crossed
        lo, hi = c["ci95"]
        lines.append(
            f"{c['optimizer']:>9} {c['width']:>6} {c['delta']:>6g} {c['runs']:>6} {crossed:>8}"
            f" {stuck:>6} {other:>6}"
            f"  {c['p_stuck']:.3f} [{lo:.3f}, {hi:.3f}]"
        )
    return "\n".join(lines)


def write_section10(
    out_dir: Path, scale_name: str, scale, rows, best, *, seconds: float, backend: str
) -> None:
    """section10.csv (every configuration × step size), section10.md (the best step size
    per configuration), summary.json and section10.png, each written atomically."""
    import dataclasses

    from gdrelu import section10

    out_dir.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _atomic_write(out_dir / "section10.csv", text.getvalue().encode())
    _atomic_write(out_dir / "section10.md", (section10.format_table(best) + "\n").encode())
    summary = {
        "preset": "section10",
        "scale": scale_name,
        "sizes": dataclasses.asdict(scale),
        "best": best,
        "seconds": seconds,
        "backend": backend,
        "deviations": [line.strip() for line in section10.__doc__.split("Deviations")[1:]],
    }
    _atomic_write(out_dir / "summary.json", json.dumps(summary, indent=2).encode())
    tmp_png = out_dir / ".section10.png.tmp.png"
    section10.relative_rmse_plot(best, tmp_png)
    os.replace(tmp_png, out_dir / "section10.png")


# ---------------------------------------------------------------------------------------
# The unit store: a run directory holds a manifest (the specs and their hash) and one file
# per finished unit (one spec's width: all its Δ cells), each written atomically, so a
# run killed at any moment loses at most the unit in progress and `--resume` redoes only
# what is missing.
# ---------------------------------------------------------------------------------------

MANIFEST = "manifest.json"
UNITS = "units"


class ResumeError(ValueError):
    """A directory that cannot be resumed with these specs."""


def spec_hash(specs: Sequence[ExperimentSpec]) -> str:
    """sha256 of the specs' canonical JSON."""
    text = json.dumps([s.to_dict() for s in specs], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def write_manifest(out_dir: Path, specs: Sequence[ExperimentSpec]) -> None:
    """Record what `out_dir` holds, before any compute; a resume must match it."""
    manifest = {"specs": [s.to_dict() for s in specs], "spec_hash": spec_hash(specs)}
    (out_dir / UNITS).mkdir(parents=True, exist_ok=True)
    _atomic_write(out_dir / MANIFEST, json.dumps(manifest, indent=2).encode())


def check_manifest(out_dir: Path, specs: Sequence[ExperimentSpec]) -> None:
    """Refuse to resume `out_dir` with other specs than it was started with."""
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        raise ResumeError(f"{out_dir} has no readable {MANIFEST}: not a gdrelu run") from None
    if manifest.get("spec_hash") != spec_hash(specs):
        started = manifest["specs"][0]
        now = specs[0].to_dict()
        differ = sorted(k for k in set(started) | set(now) if started.get(k) != now.get(k))
        detail = f" (differs in {', '.join(differ)})" if differ else ""
        raise ResumeError(f"{out_dir} was started with another spec{detail}")


def _unit_path(out_dir: Path, spec: ExperimentSpec, width: int) -> Path:
    return out_dir / UNITS / f"{spec.optimizer}-w{width}.npz"


def save_unit(out_dir: Path, cell_results: Sequence[CellResult]) -> None:
    """One finished unit (the cells of one spec and width), atomically."""
    arrays = {}
    for i, cr in enumerate(cell_results):
        arrays[f"{i}/step_size"] = np.asarray(cr.step_size)
        for field, value in cr.result._asdict().items():
            if field == "params":
                for name, leaf in value._asdict().items():
                    arrays[f"{i}/params/{name}"] = np.asarray(leaf)
            else:
                arrays[f"{i}/{field}"] = np.asarray(value)
    first = cell_results[0].cell
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    _atomic_write(_unit_path(out_dir, first.spec, first.width), buffer.getvalue())


def load_unit(out_dir: Path, spec: ExperimentSpec, width: int) -> list[CellResult] | None:
    """The stored cells of (spec, width), or None if that unit has not finished."""
    from gdrelu.engine import SimulationResult
    from gdrelu.experiment import Cell
    from gdrelu.model import Params

    path = _unit_path(out_dir, spec, width)
    if not path.exists():
        return None
    with np.load(path) as stored:
        results = []
        for i, delta in enumerate(spec.deltas):
            fields = {f: stored[f"{i}/{f}"] for f in SimulationResult._fields if f != "params"}
            params = Params(*(stored[f"{i}/params/{n}"] for n in Params._fields))
            result = SimulationResult(params=params, **fields)
            results.append(CellResult(Cell(width, delta, spec), stored[f"{i}/step_size"], result))
    return results
