"""What a finished experiment says: P(stuck) per cell with its interval, status counts,
paired comparisons of optimizers, and the summary that summary.json holds (docs/theory.md,
"Provably stuck" and "Outcome of a run")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gdrelu.cells import CellResult
from gdrelu.detectors import ESCAPE_MARGIN
from gdrelu.outcome import Status, status_counts
from gdrelu.spec import ExperimentSpec
from gdrelu.stats import failure_probability, paired_comparison


def stuck_runs(cell_result: CellResult) -> np.ndarray:
    """Which runs of a cell are stuck (bool, runs): certified by GD's criterion or
    degenerate; with the spec's "final" stuck rule also the runs whose final network is
    still in the linear regime (`detectors`), but for diverged runs and runs the crossing
    rule stopped (`SimulationResult.stuck`)."""
    rule = "final" if cell_result.cell.spec.final_stuck_rule else "certificate"
    return cell_result.result.stuck(rule)


def interval_halfwidth(cell_result: CellResult) -> float:
    """Half the width of the 95% Clopper-Pearson interval of the cell's P(stuck)."""
    stuck = stuck_runs(cell_result)
    low, high = failure_probability(int(stuck.sum()), stuck.size)[1]
    return (high - low) / 2.0


def below_threshold(cell_result: CellResult) -> dict[str, np.ndarray]:
    """Which runs had a training loss below (1 - ESCAPE_MARGIN) L_lin: "ever" (at some
    step, `loss_below_step`, as the paper's star code counted) and "final" (the final
    network); bool (runs,) each."""
    res = cell_result.result
    final = res.final_loss < (1.0 - ESCAPE_MARGIN) * res.linear_threshold
    return {"ever": res.loss_below_step >= 0, "final": final}


def _fraction(mask: np.ndarray) -> dict[str, Any]:
    p, ci = failure_probability(int(mask.sum()), mask.size)
    return {"runs": int(mask.sum()), "fraction": p, "ci95": list(ci)}


def cell_summary(cell_result: CellResult) -> dict[str, Any]:
    """One summary.json cell: counts by status, P(stuck) and its 95% interval
    (`stuck_runs`), the crossed runs not counted stuck ("crossed_not_stuck": every run the
    crossing rule stopped, under either rule), and the counts of both detectors."""
    cell, res = cell_result.cell, cell_result.result
    stuck_mask = stuck_runs(cell_result)
    stuck = int(stuck_mask.sum())
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
        "crossed_not_stuck": int(np.sum((res.status == Status.CROSSED) & ~stuck_mask)),
        "p_stuck": p,
        "ci95": list(ci),
        **_target_met(cell_result),
        "detectors": {
            "pattern_changed": int(np.sum(res.pattern_change_step >= 0)),
            "escaped_final": int(np.sum(res.escaped)),
        },
        "loss_below_threshold": {
            when: _fraction(mask) for when, mask in below_threshold(cell_result).items()
        },
    }


def _target_met(cell_result: CellResult) -> dict[str, bool]:
    """Whether a cell grown to `target_halfwidth` met it (it may stop at `max_runs`), and
    whether its intervals (P(stuck)'s and the loss fractions') are nominal: where it could
    grow, the outcomes chose the run count (docs/theory.md)."""
    spec = cell_result.cell.spec
    if spec.target_halfwidth is None:
        return {}
    met = bool(interval_halfwidth(cell_result) <= spec.target_halfwidth)
    return {"target_halfwidth_met": met, **({"ci95_nominal": True} if can_grow(spec) else {})}


def can_grow(spec: ExperimentSpec) -> bool:
    """Whether `target_halfwidth` may add runs to a cell: with `max_runs` equal to `runs`
    it cannot, and the run count is fixed, the intervals exact."""
    return spec.target_halfwidth is not None and spec.max_runs > spec.runs


def _nominal(what: str) -> str:
    """The line that says what is nominal or biased after --target-halfwidth."""
    return (
        f"{what}: --target-halfwidth chose the run counts from the outcomes "
        "(docs/theory.md, 'Outcome of a run')"
    )


def comparisons(cell_results: Sequence[CellResult]) -> list[dict[str, Any]]:
    """Paired differences P_a(stuck) - P_b(stuck) for every pair of optimizers a before b
    and every (width, Δ) cell they share, with the exact McNemar test and Newcombe's
    interval (`stats`). Run i of a cell starts from the same data and network for every
    optimizer, so the pairs are the run indices both have: all of them, or the first
    ones where `target_halfwidth` grew one optimizer's cell further than another's."""
    out = []
    for (width, delta), per_optimizer in _paired_cells(cell_results).items():
        names = list(per_optimizer)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                stuck_a, stuck_b = stuck_runs(per_optimizer[a]), stuck_runs(per_optimizer[b])
                shared = min(stuck_a.size, stuck_b.size)
                pair = paired_comparison(stuck_a[:shared], stuck_b[:shared])
                grown = any(can_grow(per_optimizer[o].cell.spec) for o in (a, b))
                nominal = {"ci95_nominal": True} if grown else {}
                out.append(
                    {"a": a, "b": b, "width": int(width), "delta": float(delta), **pair, **nominal}
                )
    return out


def _paired_cells(cell_results: Sequence[CellResult]) -> dict[tuple, dict[str, CellResult]]:
    """{(width, Δ): {optimizer: cell}}, refusing a second cell of an optimizer (it would
    replace the first) and cells whose run i starts elsewhere (another seed or cell hash:
    `Cell.settings`), which are no pairs."""
    by_cell: dict[tuple, dict[str, CellResult]] = {}
    for cr in cell_results:
        cell, name = cr.cell, cr.cell.spec.optimizer
        cells = by_cell.setdefault((cell.width, cell.delta), {})
        where = f"width {cell.width}, Δ = {cell.delta:g}"
        if name in cells:
            raise ValueError(f"cell_results: two cells of optimizer {name!r} at {where}")
        for other, first in cells.items():
            starts = [(c.spec.seed, c.cell_id) for c in (cell, first.cell)]
            if starts[0] != starts[1]:
                raise ValueError(
                    f"cell_results: {name!r} at {where} (seed, cell) = {starts[0]}, {other!r} "
                    f"{starts[1]}: run i starts alike only in one seed and cell"
                )
        cells[name] = cr
    return by_cell


def format_comparisons(pairs: Sequence[dict[str, Any]]) -> str:
    """One line per comparison (`comparisons`): the difference, its 95% interval, the pairs
    and McNemar's p; then a line when the intervals are nominal (`--target-halfwidth`: the
    number of pairs is a stopping time of the outcomes, as for a cell's interval)."""
    lines = [
        f"{c['a']} - {c['b']}  n={c['width']} Δ={c['delta']:g}: {c['difference']:+.3f} "
        f"[{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}] over {c['runs']} pairs  "
        f"McNemar p = {c['p_value']:.3g}"
        for c in pairs
    ]
    if any(c.get("ci95_nominal") for c in pairs):
        lines.append(_nominal("95% CIs of the differences are nominal"))
    return "\n".join(lines)


def experiment_summary(
    spec: ExperimentSpec,
    cell_results: Sequence[CellResult],
    *,
    seconds: float,
    backend: str,
    extra: dict[str, Any] | None = None,
    together: Sequence[ExperimentSpec] = (),
) -> dict[str, Any]:
    """summary.json of an experiment: its cells, time, backend, memory, spec, the settings
    that change results (`provenance.settings` of `spec`, or of every spec trained
    `together`, as `gdrelu compare` does), and `extra`."""
    from gdrelu import provenance

    return {
        "cells": [cell_summary(c) for c in cell_results],
        "seconds": seconds,
        "backend": backend,
        "peak_memory": provenance.peak_memory(),
        "spec": spec.to_dict(),
        **provenance.recorded(together or [spec]),
        **(extra or {}),
    }


def format_table(cells: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of summary cells whose counts partition each cell's runs into
    stuck (the runs P(stuck) counts) and two more columns, by the cell's stuck rule:
    under the certificate rule crossed and other (early-stopped, diverged, unfinished);
    under the final-network rule escaped (the final network left the linear regime, or
    the crossing rule stopped the run where it may escape) and diverged. Then P(stuck)
    and its 95% interval. Cells grown to a target half-width get a line saying their
    intervals are nominal, and one naming those that stopped at --max-runs short of it."""
    rules = sorted({c["stuck_rule"] for c in cells}) or ["certificate"]
    first = "/".join({"certificate": "crossed", "final": "escaped"}[r] for r in rules)
    last = "/".join({"certificate": "other", "final": "diverged"}[r] for r in rules)
    digits = max((len(str(c["runs"])) for c in cells), default=0)  # no count exceeds runs
    n = max([6, *(len(str(c["width"])) for c in cells)])
    d = max([6, *(len(f"{c['delta']:g}") for c in cells)])
    r, f, wide = max(6, digits), max(8, len(first), digits), max(6, len(last), digits)
    header = (
        f"{'optimizer':>9} {'width':>{n}} {'delta':>{d}} {'runs':>{r}} {first:>{f}}"
        f" {'stuck':>{r}} {last:>{wide}}  P(stuck) [95% CI]"
    )
    lines = [header]
    for c in cells:
        stuck = c["stuck"]
        if c["stuck_rule"] == "final":
            last_count = c["status_counts"]["diverged"]
            first_count = c["runs"] - stuck - last_count
        else:
            first_count = c["crossed_not_stuck"]  # every crossed run: none is certified
            last_count = c["runs"] - stuck - first_count
        lo, hi = c["ci95"]
        lines.append(
            f"{c['optimizer']:>9} {c['width']:>{n}} {c['delta']:>{d}g} {c['runs']:>{r}}"
            f" {first_count:>{f}} {stuck:>{r}} {last_count:>{wide}}"
            f"  {c['p_stuck']:.3f} [{lo:.3f}, {hi:.3f}]"
        )
    if any(c.get("ci95_nominal") for c in cells):
        lines.append(_nominal("95% CIs are nominal and P(stuck) leans slightly away from 1/2"))
    missed = [c for c in cells if c.get("target_halfwidth_met") is False]
    if missed:
        named = ", ".join(f"{c['optimizer']} n={c['width']} Δ={c['delta']:g}" for c in missed)
        lines.append(f"--max-runs reached before the target half-width: {named}")
    return "\n".join(lines)
