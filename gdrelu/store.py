"""The files of a run directory: the per-run table, summary.json and the figures, the
manifest, one file per finished unit and one per finished batch of a unit in progress
(a part; docs/design.md, "Store").

Only files: what goes in them comes from `analysis`, `records`, `provenance` and
`section10`. Every file is written to a temporary name in the output directory, flushed,
renamed into place, and the directory flushed, so a crash never leaves a half-written
file under its final name, and a run killed at any moment (or a power failure) loses at
most the batch in progress (the runner's bucket in progress across processes).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gdrelu.atomic import read_npz, temporaries, write_bytes, write_figure, write_with
from gdrelu.engine import SimulationResult
from gdrelu.model import Params
from gdrelu.outcome import with_diverged_escaped
from gdrelu.records import RUN_COLUMNS, RunRecord

MANIFEST = "manifest.json"
UNITS = "units"
PARTS = "parts"  # under units/: the finished batches of a unit in progress


class ResumeError(ValueError):
    """A directory that cannot be resumed with these settings."""


def _csv(header: Sequence[str], rows) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue().encode()


def _json(value: Any) -> bytes:
    """Strict JSON (what `jq` and JavaScript parse): a non-finite number is written null."""
    return json.dumps(_finite(value), indent=2, allow_nan=False).encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_results(out_dir: Path, records: Sequence[RunRecord], summary: dict[str, Any]) -> None:
    """runs.csv (one row per record), summary.json and failure_probability.png (and
    comparison.png when the summary holds "comparisons")."""
    from gdrelu.plot import comparison_plot, failure_probability_plot, setting_line

    out_dir.mkdir(parents=True, exist_ok=True)
    write_bytes(out_dir / "runs.csv", _csv(RUN_COLUMNS, records))
    write_bytes(out_dir / "summary.json", _json(summary))
    cells, setting = summary["cells"], setting_line(summary.get("spec", {}))
    figure = out_dir / "failure_probability.png"
    write_figure(figure, lambda p: failure_probability_plot(cells, p, setting))
    if summary.get("comparisons"):
        pairs = summary["comparisons"]
        write_figure(
            out_dir / "comparison.png", lambda p: comparison_plot(pairs, p, setting, cells)
        )


def write_section10(
    out_dir: Path, rows: Sequence[dict], table: str, summary: dict[str, Any]
) -> None:
    """section10.csv (every configuration × step size), section10.md (`table`),
    summary.json and section10.png (from the summary's "best" rows)."""
    from gdrelu.plot import relative_rmse_plot

    out_dir.mkdir(parents=True, exist_ok=True)
    header = list(rows[0])
    write_bytes(out_dir / "section10.csv", _csv(header, ([r[k] for k in header] for r in rows)))
    write_bytes(out_dir / "section10.md", (table + "\n").encode())
    write_bytes(out_dir / "summary.json", _json(summary))
    write_figure(out_dir / "section10.png", lambda p: relative_rmse_plot(summary["best"], p))


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    """Record what `out_dir` holds (`provenance.manifest`), before any compute; then
    units/, so that a directory with units/ always has its manifest."""
    write_bytes(out_dir / MANIFEST, _json(manifest))
    (out_dir / UNITS).mkdir(parents=True, exist_ok=True)


def read_manifest(out_dir: Path) -> dict[str, Any]:
    """The manifest `out_dir` was started with; ResumeError if it has none, or one that
    is cut or edited out of shape."""
    path = out_dir / MANIFEST
    if not out_dir.is_dir():
        raise ResumeError(f"{out_dir} is not a directory")
    if not path.exists():
        writing = [p.name for p in temporaries(out_dir) if p.name.startswith(f".{MANIFEST}.")]
        if writing:
            raise ResumeError(
                f"{out_dir} holds only the {MANIFEST} its run was writing when it stopped "
                f"({writing[0]}): nothing was trained; start the run again there with --out"
            )
        raise ResumeError(f"{out_dir} has no {MANIFEST}: not a gdrelu run")
    try:
        started = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ResumeError(f"{path} is unreadable ({err}): the run cannot be resumed") from None
    specs = started.get("specs") if isinstance(started, dict) else None
    if not (isinstance(specs, list) and specs and all(isinstance(x, dict) for x in specs)):
        raise ResumeError(f"{path} records no spec: the run cannot be resumed")
    if not isinstance(started.get("settings", {}), dict):
        raise ResumeError(f"{path} records its settings out of shape: the run cannot be resumed")
    return started


def check_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    """Refuse to resume `out_dir` with other specs or settings than it was started with,
    naming what differs (`provenance.differing_fields`); a data file whose content hash
    is recorded may have moved."""
    from gdrelu.provenance import differing_fields, recorded_and_given

    started = read_manifest(out_dir)
    was, now = started["specs"], manifest["specs"]
    if len(was) != len(now):
        raise ResumeError(f"{out_dir} was started with {len(was)} specs, this run has {len(now)}")
    hashed = "data_sha256" in started.get("settings", {})  # then a file is named by content
    for before, after in zip(was, now, strict=True):
        missing = [f for f in after if f not in before]
        if len(missing) > 3:  # fewer: named below, each "not recorded"
            raise ResumeError(
                f"{out_dir}/{MANIFEST} records a spec without {len(missing)} of its fields "
                f"({', '.join(missing[:3])}, ...): an edited manifest, or a run of an older "
                "gdrelu; start it again in a new directory"
            )
        differ = [f for f in differing_fields(before, after) if not (hashed and f == "data_file")]
        if differ:
            said = "; ".join(recorded_and_given(before, after, f, "this run has") for f in differ)
            raise ResumeError(f"{out_dir} was started with another spec (differs in {said})")
    recorded = _as_recorded_now(out_dir, started.get("settings", {}), manifest["settings"])
    for name, value in manifest["settings"].items():
        if name not in recorded:
            raise ResumeError(
                f"{out_dir}/{MANIFEST} records no {name} (a run of an older gdrelu): "
                "start it again in a new directory"
            )
        if recorded[name] != value and name == "data_sha256":
            raise ResumeError(f"{out_dir} was started on another data file (its SHA-256 differs)")
        if recorded[name] != value:
            hint = _kernel_hint(recorded[name]) if name == "kernels" else ""
            raise ResumeError(
                f"{out_dir} was started with {name} {recorded[name]!r}, this run has {value!r}"
                + hint
            )


def _kernel_hint(kernels) -> str:
    """How to resume a run recorded with other `kernels`: the --kernel that would give
    them (`kernel_flag`), unless this run asked for that one already (then they are not
    this machine's or this gdrelu's)."""
    from gdrelu.engine import requested_kernel

    flag = kernel_flag(kernels) if isinstance(kernels, str) else None
    if flag is None or flag == requested_kernel():
        return ": no kernel here gives them (another machine or gdrelu started it)"
    return f": resume with --kernel {flag}"


def kernel_flag(kernels: str) -> str:
    """The --kernel (or $GDRELU_PROPAGATOR_KERNEL) under which a run's recorded `kernels`
    (`provenance.settings`) resolve again on a machine like the one that started it:
    "native" where the general path took the C loop, the GPU kernels by name, "auto"
    where the propagator's C loop was auto's choice (or no spec took the propagator),
    else "xla"."""
    names = kernels.split(",")
    if any(name.endswith("-native") for name in names):
        return "native"
    for name in ("pallas", "interpret"):
        if name in names:
            return name
    return "auto" if "native" in names or "xla" not in names else "xla"


def _as_recorded_now(out_dir: Path, recorded: dict, now: dict) -> dict:
    """A manifest's `recorded` settings in this gdrelu's terms. An older gdrelu recorded
    `kernel`: full-batch GD's in float64 until 879a849, then each spec's, what `kernels`
    holds now. It stands for this run's `kernels` where it is either here: GD's kernel the
    same, every spec's resolves here as it did there. Such a gdrelu had no Adam C loop:
    its general steps trained on XLA's loop, so a run whose general steps take the C loop
    (`native_general`) is refused."""
    from gdrelu.provenance import gd_kernel

    if "kernel" not in recorded or "kernels" in recorded:
        return recorded
    general = {"adam-native", "general-native"} & set(now["kernels"].split(","))
    if general:
        raise ResumeError(
            f"{out_dir} was started before the general path's C loop, with kernel "
            f"{recorded['kernel']!r}, and its general steps trained on XLA's loop; this run's "
            f"take the C loop ({', '.join(sorted(general))}): resume it without --kernel "
            "native (and $GDRELU_PROPAGATOR_KERNEL unset)"
        )
    if recorded["kernel"] not in (gd_kernel(), now["kernels"]):
        raise ResumeError(
            f"{out_dir} was started with kernel {recorded['kernel']!r}, this run has "
            f"{gd_kernel()!r}"
        )
    return {**recorded, "kernels": now["kernels"]}


def _unit_path(out_dir: Path, name: str) -> Path:
    return out_dir / UNITS / f"{name}.npz"


def save_unit(out_dir: Path, name: str, cell_results: Sequence, seconds: float) -> None:
    """One finished unit: each cell's width, Δ and spec, step sizes and
    `SimulationResult`, and the `seconds` its training took, atomically."""
    _save_npz(_unit_path(out_dir, name), _unit_arrays(cell_results, seconds))


def _unit_arrays(cell_results: Sequence, seconds: float) -> dict[str, np.ndarray]:
    arrays = {"seconds": np.float64(seconds)}
    for i, cr in enumerate(cell_results):
        arrays[f"{i}/cell"] = np.asarray(json.dumps(_described(cr.cell), sort_keys=True))
        arrays[f"{i}/step_size"] = np.asarray(cr.step_size)
        for field, value in cr.result._asdict().items():
            if field == "params":
                for leaf_name, leaf in value._asdict().items():
                    arrays[f"{i}/params/{leaf_name}"] = np.asarray(leaf)
            else:
                arrays[f"{i}/{field}"] = np.asarray(value)
    return arrays


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """`arrays` as an NPZ archive at `path`, written atomically straight into the temporary
    file (`write_with`): the same bytes as an archive built in a buffer, without the
    buffer and its copy, which held a unit's results twice more while it was written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_with(path, lambda f: np.savez(f, **arrays))


def load_unit(out_dir: Path, name: str, cells: Sequence) -> list[tuple] | None:
    """The stored (step sizes, result) of each of `cells` (`cells.Cell`) in unit `name`,
    or None if that unit has not finished. A unit of other cells (another width, Δ or
    spec setting, or another number of cells) is refused: its runs are not these cells'.
    Units written before gdrelu stored their cells are checked by their run counts only."""
    path = _unit_path(out_dir, name)
    if not path.exists():
        return None
    try:
        with read_npz(path) as stored:
            count = sum(1 for key in stored.files if key.endswith("/step_size"))
            if count != len(cells):
                raise ResumeError(f"{path} holds {count} cells, not {len(cells)}")
            found = []
            for i, cell in enumerate(cells):
                if f"{i}/cell" in stored.files:
                    _check_same_cell(path, json.loads(str(stored[f"{i}/cell"])), cell)
                _check_run_count(path, len(stored[f"{i}/status"]), cell.spec)
                found.append(_stored_cell(stored, i, cell))
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as err:
        if isinstance(err, ResumeError):
            raise
        raise _unreadable(path, err) from None
    return found


def _stored_cell(stored, i: int, cell) -> tuple[np.ndarray, SimulationResult]:
    """(step sizes, result) of the `i`-th cell of an open unit or part, `cell`'s."""
    older = f"{i}/certificate_checked" not in stored  # before it was stored
    skipped = {"params", "certificate_checked"} if older else {"params"}
    fields = {f: stored[f"{i}/{f}"] for f in SimulationResult._fields if f not in skipped}
    if older:  # what its spec asked for
        checked = cell.spec.applies_certificate
        fields["certificate_checked"] = np.full(len(stored[f"{i}/status"]), checked)
    params = Params(*(stored[f"{i}/params/{n}"] for n in Params._fields))
    # a unit of an older gdrelu: a diverged run reads escaped, as simulate reports it now
    fields["escaped"] = with_diverged_escaped(fields["escaped"], fields["status"])
    return stored[f"{i}/step_size"], SimulationResult(params=params, **fields)


def save_part(
    out_dir: Path, pieces: Sequence[tuple[Any, np.ndarray]], seconds: float, units: Sequence[str]
) -> None:
    """One finished batch of the bucket (or group) of `units` (the names of its units,
    none stored yet): each (cell result, its run indices) of `pieces` and the `seconds`
    the batch took, atomically, under units/parts/ (named by its cells and runs, so a
    batch trained twice overwrites itself). Its seconds count until one of `units` is
    stored, its runs until all are."""
    arrays = _unit_arrays([cr for cr, _ in pieces], seconds)
    for i, (_, indices) in enumerate(pieces):
        arrays[f"{i}/runs"] = np.asarray(indices, np.int64)
    arrays["units"] = np.asarray(json.dumps(sorted(units)))
    names = [f"{i}/cell" for i in range(len(pieces))] + [f"{i}/runs" for i in range(len(pieces))]
    digest = hashlib.sha256(b"".join(arrays[k].tobytes() for k in names)).hexdigest()[:16]
    _save_npz(out_dir / UNITS / PARTS / f"{digest}.npz", arrays)


def _part_paths(out_dir: Path) -> list[Path]:
    return sorted((out_dir / UNITS / PARTS).glob("*.npz"))


def _part_cells(part) -> list[str]:
    """The described cells of an open part, in order."""
    return [str(part[f"{i}/cell"]) for i in range(sum(k.endswith("/runs") for k in part))]


def _part_units(part) -> list[str]:
    return json.loads(str(part["units"]))


def _superseded(out_dir: Path, part) -> bool:
    """Whether every unit an open part was trained for is stored: its runs are theirs."""
    return all(_unit_path(out_dir, name).exists() for name in _part_units(part))


def _part_seconds(out_dir: Path, part) -> float:
    """An open part's seconds, or 0 once some unit it was trained for is stored: the first
    unit of a bucket (or group) stored takes the seconds of all its parts (`runner`)."""
    timed = any(_unit_path(out_dir, name).exists() for name in _part_units(part))
    return 0.0 if timed else float(part["seconds"])


def part_runs(out_dir: Path, cells: Sequence, units: Sequence[str]) -> dict[Any, np.ndarray]:
    """{cell: the sorted run indices of it stored in parts} for each of `cells` (of the
    units named `units`) with any: the runs a resume need not train again."""
    found: dict[Any, list[np.ndarray]] = {}
    read = lambda part, here: [(cell, part[f"{i}/runs"]) for i, cell in here]  # noqa: E731
    for pieces in _read_parts(out_dir, cells, units, read):
        for cell, runs in pieces:
            found.setdefault(cell, []).append(runs)
    return {cell: np.unique(np.concatenate(runs)) for cell, runs in found.items()}


def load_parts(
    out_dir: Path, cells: Sequence, units: Sequence[str]
) -> tuple[dict[Any, list[tuple]], float]:
    """({cell: [(run indices, step sizes, result), ...]} of each of `cells` (of the units
    named `units`) stored in parts, the seconds those parts' batches took)."""

    def read(part, here):
        pieces = [(cell, (part[f"{i}/runs"], *_stored_cell(part, i, cell))) for i, cell in here]
        return _part_seconds(out_dir, part), pieces

    found: dict[Any, list[tuple]] = {}
    seconds = 0.0
    for took, pieces in _read_parts(out_dir, cells, units, read):
        seconds += took
        for cell, piece in pieces:
            found.setdefault(cell, []).append(piece)
    return found, seconds


def _read_parts(out_dir: Path, cells: Sequence, units: Sequence[str], read: Callable) -> list:
    """read(part, [(position, cell), ...]) of each part under `out_dir` (open) that holds
    some of `cells` and belongs to a unit not yet stored. Parts of other units are passed
    over; a part of one of `units` that holds another cell at the width and Δ of one of
    `cells` (another seed, say) is refused, as a unit of other cells is (`load_unit`)."""
    wanted = {json.dumps(_described(cell), sort_keys=True): cell for cell in cells}
    out = []
    for path in _part_paths(out_dir):
        try:
            with read_npz(path) as part:
                if _superseded(out_dir, part):
                    continue
                if not set(_part_units(part)) & set(units):
                    continue
                described = _part_cells(part)
                for d in described:
                    same = None if d in wanted else _closest(json.loads(d), cells)
                    if same is not None:
                        _check_same_cell(path, json.loads(d), same)
                here = [(i, wanted[d]) for i, d in enumerate(described) if d in wanted]
                if here:
                    out.append(read(part, here))
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as err:
            if isinstance(err, ResumeError):
                raise
            raise _unreadable(path, err) from None
    return out


def _closest(stored: dict[str, Any], cells: Sequence):
    """The cell of `cells` at the stored cell's width and Δ that differs from it in the
    fewest fields (a Section 10 group's cells share both), or None."""
    place = (stored.get("width"), stored.get("delta"))
    same = [c for c in cells if (c.width, c.delta) == place]

    def differing(cell) -> int:
        expected = _described(cell)
        return sum(stored.get(k) != expected.get(k) for k in stored.keys() | expected.keys())

    return min(same, key=differing, default=None)


def remove_superseded_parts(out_dir: Path) -> None:
    """Delete the parts whose every unit is stored (`_superseded`), and units/parts/ once
    empty."""
    for path in _part_paths(out_dir):
        try:
            with read_npz(path) as part:
                superseded = _superseded(out_dir, part)
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as err:
            raise _unreadable(path, err) from None
        if superseded:
            path.unlink()
    with contextlib.suppress(OSError):  # absent, or holding parts still
        (out_dir / UNITS / PARTS).rmdir()


def _described(cell) -> dict[str, Any]:
    """What a unit records of a cell, in JSON's types: its width, Δ and spec, with a data
    file named by its content (`data_sha256`), as cells are, not by its path."""
    spec = cell.spec
    described = {"width": int(cell.width), "delta": float(cell.delta), **spec.to_dict()}
    described.update(data_file=None, data_sha256=spec.data_sha256)
    return json.loads(json.dumps(described))


def _check_run_count(path: Path, count: int, spec) -> None:
    """A unit's cell holds `spec.runs` runs, or `runs` to `max_runs` when grown to a
    target half-width: a unit of an older gdrelu, which stored no cell to compare, is
    refused at least when its runs are another spec's."""
    most = spec.runs if spec.target_halfwidth is None else spec.max_runs
    if not spec.runs <= count <= most:
        want = f"{spec.runs}" if most == spec.runs else f"{spec.runs} to {most}"
        raise ResumeError(
            f"{path} holds {count} runs of a cell, not {want}: use another directory for "
            "another spec"
        )


def _check_same_cell(path: Path, stored: dict[str, Any], cell) -> None:
    expected = _described(cell)
    fields = sorted(stored.keys() | expected.keys())
    differ = [k for k in fields if stored.get(k) != expected.get(k)]
    if differ:
        field = differ[0]
        raise ResumeError(
            f"{path} was trained with {field} = {stored.get(field)!r}, not "
            f"{expected.get(field)!r}: use another directory for another spec"
        )


def stored_seconds(out_dir: Path) -> float:
    """The training seconds recorded by the units finished under `out_dir` and by the
    parts of units not yet stored (0 if none): what a resumed run spent before it was
    resumed. Units written before gdrelu recorded their time count as 0."""
    total = 0.0
    for path in sorted((out_dir / UNITS).glob("*.npz")) + _part_paths(out_dir):
        try:
            with read_npz(path) as stored:
                if path.parent.name == PARTS:
                    total += _part_seconds(out_dir, stored)
                elif "seconds" in stored.files:
                    total += float(stored["seconds"])
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as err:
            raise _unreadable(path, err) from None
    return total


def _unreadable(path: Path, err: Exception) -> ResumeError:
    what = "part" if path.parent.name == PARTS else "unit"
    reason = "it holds Python objects, which gdrelu never stores" if "pickle" in str(err) else err
    return ResumeError(
        f"{path} is not a readable {what} ({reason}); delete it to train its runs again"
    )
