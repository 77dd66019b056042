"""The run directory's files: records as columns, the manifest and its checks on resume,
the settings outside a spec that change results, and hashing a data file once."""

import dataclasses
import functools
import itertools
import json
import math
import os
import pathlib
import re
import shutil

import jax
import numpy as np
import pytest
from conftest import disk_full, files_left_open, finished_cell

from gdrelu import atomic, provenance, section10, store
from gdrelu.cells import Cell, CellResult
from gdrelu.cli import main
from gdrelu.engine import KERNEL_VARIABLE, SimulationResult, Status
from gdrelu.model import Params
from gdrelu.records import RUN_COLUMNS, RunRecord, run_records, table
from gdrelu.spec import ExperimentSpec

# the runs and checks of tests/test_engine.py's `width8` (40 runs of width 8, checks every
# 200 steps): their programs come from the suite's compilation cache when another module
# compiled them first
TINY_RUN = ["--widths", "8", "--deltas", "0", "--runs", "40", "--check-every", "200",
            "--max-checks", "2", "--quiet"]  # fmt: skip
POINTS = "x,y\n-3,1\n-2,0.5\n-1,0\n1,0\n2,0.7\n3,2\n"  # a data file's six points
# one Section 10 configuration's row at one step size
SECTION10_ROW = dict(data="radial", dim=1, init="he", optimizer="sgd", bias_init="zero",
                     step_size=0.1, validation_rmse=0.5, test_rmse=0.4,
                     test_rmse_se=0.01)  # fmt: skip


class Killed(Exception):
    """A kill at a chosen moment of a run (tests raise it from stubbed steps)."""


def fake_result(cell: Cell, runs: int) -> CellResult:
    """A cell's result of `runs` crossed runs, escaped, without training."""
    return finished_cell(cell, [Status.CROSSED] * runs, escaped=np.ones(runs, bool))


def test_records_are_named_and_give_the_columns():
    spec = ExperimentSpec(widths=(4,), deltas=(0.1,), runs=3)
    (record, *_) = run_records(fake_result(Cell(4, 0.1, spec), 3))
    assert isinstance(record, RunRecord) and RunRecord._fields == RUN_COLUMNS
    assert RUN_COLUMNS[:3] == ("run_id", "seed", "width")
    assert record.status == "crossed" and record.step_size == 0.5 and record.index == 0
    assert record.run_id == f"{Cell(4, 0.1, spec).cell_id}-0"


def test_each_record_field_comes_from_its_own_column_and_run():
    """Every result field set to a value that names it and the run (field k, run i:
    10 k + i), so that a record reading another field or another run shows."""
    spec = ExperimentSpec(widths=(4,), deltas=(0.1,), runs=2, seed=7, optimizer="momentum")
    cell = Cell(4, 0.1, spec)
    runs = np.arange(2)
    fields = {
        f: 10.0 * k + runs
        for k, f in enumerate(SimulationResult._fields)
        if f not in ("params", "status", "escaped")
    }
    fields.update(status=np.array([Status.STUCK, Status.DIVERGED], np.int8),
                  escaped=np.array([False, True]))  # fmt: skip
    params = Params(*(np.zeros((2, 4)),) * 3, np.zeros(2))
    result = SimulationResult(params=params, **fields)
    records = run_records(CellResult(cell, np.array([0.25, 0.5]), result))
    for i, record in enumerate(records):
        assert record.run_id == f"{cell.cell_id}-{i}" and record.index == i
        where = (record.seed, record.width, record.delta, record.optimizer)
        assert where == (7, 4, 0.1, "momentum")
        assert record.status == ("stuck", "diverged")[i] and record.escaped == bool(i)
        assert record.step_size == (0.25, 0.5)[i]
        for k, f in enumerate(SimulationResult._fields):  # but the spec's certificate_checked
            if f in fields and f not in ("status", "escaped", "certificate_checked"):
                assert getattr(record, f) == 10 * k + i, f


def test_a_data_file_is_read_and_hashed_once_per_spec(tmp_path, monkeypatch):
    """Every runs.csv row names its cell, whose hash covers the file's content: the file is
    read once to check the spec and once to hash it, not once per row."""
    path = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.normal(size=(12, 2)), y=rng.normal(size=12))
    reads = []
    original = pathlib.Path.read_bytes

    def counted(self):
        reads.append(self)
        return original(self)

    import gdrelu.spec

    loads = []
    load = gdrelu.spec.load_user_data
    monkeypatch.setattr(pathlib.Path, "read_bytes", counted)
    monkeypatch.setattr(gdrelu.spec, "load_user_data", lambda p: loads.append(p) or load(p))
    spec = ExperimentSpec(data="file", data_file=str(path), step_size="ntk", widths=(4,),
                          deltas=(0.0, 0.1), runs=50)  # fmt: skip
    rows = table([fake_result(cell, 50) for cell in spec.cells()])
    assert len(rows) == 100 and len({r.run_id for r in rows}) == 100
    assert len(loads) == 1
    assert [p for p in reads if p == path] == [path]


def test_a_unit_is_on_disk_with_its_directory_entry(tmp_path, monkeypatch):
    """A unit's file is flushed, renamed into place, and then its directory is flushed,
    so that a power failure after save_unit keeps the unit (not only its bytes)."""
    import os
    import stat

    synced = []
    original = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.fstat(fd).st_mode) or original(fd))
    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=3)
    (tmp_path / store.UNITS).mkdir()
    store.save_unit(tmp_path, "gd-w4", [fake_result(cell, 3) for cell in spec.cells()], 1.0)
    assert [stat.S_ISDIR(mode) for mode in synced] == [False, True]


def _random_result(cell: Cell, runs: int, seed: int = 0) -> CellResult:
    """A cell's result of `runs` runs whose every field holds random values of its dtype."""
    rng = np.random.default_rng(seed)
    done = fake_result(cell, runs)[1:]
    random = jax.tree.map(lambda v: (rng.random(v.shape) * 100).astype(v.dtype), done)
    return CellResult(cell, *random)


def test_a_unit_is_written_straight_to_disk_with_the_bytes_of_a_buffered_archive(
    tmp_path, monkeypatch
):
    """A unit's archive goes straight into its temporary file, never whole through memory
    (a buffer and its copy held the results twice more), with the same bytes as the archive
    `np.savez` builds in a buffer, and reads back to what was saved."""
    import io

    spec = ExperimentSpec(widths=(4,), deltas=(0.0, 0.5), runs=7)
    saved = [_random_result(cell, 7, seed) for seed, cell in enumerate(spec.cells())]
    monkeypatch.setattr(io, "BytesIO", None)  # no archive built in memory
    store.save_unit(tmp_path, "gd-w4", saved, 2.5)
    monkeypatch.undo()
    buffer = io.BytesIO()
    np.savez(buffer, **store._unit_arrays(saved, 2.5))
    assert (tmp_path / store.UNITS / "gd-w4.npz").read_bytes() == buffer.getvalue()
    loaded = store.load_unit(tmp_path, "gd-w4", spec.cells())
    for cr, (step, result) in zip(saved, loaded, strict=True):
        for want, got in zip(jax.tree.leaves(cr[1:]), jax.tree.leaves((step, result)), strict=True):
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)


def test_an_archive_that_fails_partway_leaves_the_file_as_it_was_and_no_temporary(tmp_path):
    """An archive whose writing fails after some of its arrays are on disk: while it is
    written, nothing of it is under its final name (only the writer's temporary file),
    and after it fails, the file holds what it held before and the temporary file is
    gone."""
    path = tmp_path / "unit.npz"
    seen = []

    class Unpicklable:
        def __reduce__(self):
            seen.append((path.read_bytes(), [p.name for p in atomic.temporaries(tmp_path)]))
            raise RuntimeError("the write failed")

    store._save_npz(path, {"before": np.arange(3)})
    before = path.read_bytes()
    arrays = {"big": np.arange(1 << 20), "bad": np.array([Unpicklable()], dtype=object)}
    with pytest.raises(RuntimeError, match="write failed"):
        store._save_npz(path, arrays)
    assert seen == [(before, [f".unit.npz.{os.getpid()}.tmp"])]
    assert [p.name for p in tmp_path.iterdir()] == ["unit.npz"] and path.read_bytes() == before
    with np.load(path) as archive:
        assert archive.files == ["before"]


def test_a_figure_is_written_as_every_file_is(tmp_path, monkeypatch):
    """A figure whose drawing fails partway leaves nothing behind; one drawn is a PNG,
    flushed with its directory entry, whatever format the user's matplotlib rc asks for."""
    import os
    import stat

    import matplotlib

    def fails(buffer):
        buffer.write(b"\x89PNG half")
        raise RuntimeError("the drawing failed")

    with pytest.raises(RuntimeError, match="drawing failed"):
        atomic.write_figure(tmp_path / "figure.png", fails)
    assert list(tmp_path.iterdir()) == []
    synced = []
    original = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.fstat(fd).st_mode) or original(fd))
    monkeypatch.setitem(matplotlib.rcParams, "savefig.format", "svg")
    cells = [{"width": 16, "delta": 0.0, "p_stuck": 0.5, "ci95": [0.4, 0.6]}]
    store.write_results(tmp_path, [], {"cells": cells})
    png = (tmp_path / "failure_probability.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n") and sorted(p.name for p in tmp_path.iterdir()) == [
        "failure_probability.png",
        "runs.csv",
        "summary.json",
    ]
    assert [stat.S_ISDIR(mode) for mode in synced] == [False, True] * 3


def test_the_figures_titles_name_the_summarys_data_and_init(tmp_path, monkeypatch):
    """The figures are drawn with their spec's setting line (data set, init, seed), the
    comparison as the failure figure; a summary without a spec gets the defaults'."""
    from gdrelu import plot

    drawn = {}
    monkeypatch.setattr(
        plot,
        "failure_probability_plot",
        lambda cells, path, setting: drawn.setdefault("p", setting),
    )
    monkeypatch.setattr(plot, "comparison_plot",
                        lambda pairs, path, setting, _: drawn.setdefault("c", setting))  # fmt: skip
    spec = ExperimentSpec(data="radial", dim=3, runs=2, step_size="ntk", bias_init="normal(0.1)")
    spec = spec.to_dict()
    store.write_results(tmp_path, [], {"cells": [], "spec": spec, "comparisons": [{}]})
    setting = "data radial (d = 3), init he, biases normal(0.1), seed 0\n" + (
        "step size ntk, ≤ 1,000,000 steps, float64"
    )
    assert drawn == {"p": setting, "c": setting}
    drawn.clear()
    store.write_results(tmp_path, [], {"cells": []})
    assert drawn == {"p": "data six-points, init he, biases zero"}


def test_a_write_that_fails_leaves_the_file_as_it_was_and_no_temporary_file(tmp_path, monkeypatch):
    """A full disk while a file is written (here at its flush): the file keeps what it
    held, and the temporary file goes (one left behind held the disk's room, and made a
    new run's directory "not empty" for the same --out)."""
    import os

    path = tmp_path / "summary.json"
    atomic.write_text(path, "before")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        atomic.write_text(path, "after")
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    assert path.read_text() == "before"


def test_a_spec_given_lists_holds_tuples():
    """Lists where the spec's fields are tuples (as a Python caller may pass them) are
    taken as tuples, so the spec hashes and its cells can be drawn."""
    spec = ExperimentSpec(widths=[8, 4], deltas=[0.0], stop_on=["crossed"], runs=2)
    assert (spec.widths, spec.deltas, spec.stop_on) == ((8, 4), (0.0,), ("crossed",))
    assert hash(spec) == hash(
        ExperimentSpec(widths=(8, 4), deltas=(0.0,), stop_on=("crossed",), runs=2)
    )


@pytest.mark.parametrize(
    ("values", "kernel"),
    [
        (dict(optimizer="adam"), "none"),  # the general path: no propagator steps
        (dict(dtype="float32"), "xla"),  # the C loop trains float64 only
        (dict(optimizer="sgd", batch_size=5), "xla"),  # and minibatches of 2^k draws
    ],
)
def test_the_kernel_recorded_is_the_one_the_runs_take(values, kernel, tmp_path, monkeypatch):
    """Whatever the machine's C compiler: a run that cannot take the C loop records so,
    and resumes on a machine where `auto` would not pick it either (or that forces XLA's
    loop), though the spec-less default (GD, float64) differs there."""
    specs = [ExperimentSpec(widths=(4,), runs=2, **values)]
    monkeypatch.delenv(KERNEL_VARIABLE, raising=False)
    started = provenance.manifest([s.to_dict() for s in specs], specs)
    assert started["settings"] == {"kernels": kernel}
    store.write_manifest(tmp_path, started)
    monkeypatch.setenv(KERNEL_VARIABLE, "xla")
    store.check_manifest(tmp_path, provenance.manifest([s.to_dict() for s in specs], specs))
    both = [ExperimentSpec(widths=(4,), runs=2), *specs]
    assert provenance.settings(both)["kernels"] == "xla"


def test_a_compare_records_each_kernel_its_optimizers_take(monkeypatch, auto_kernel):
    """GD first, then SGD on minibatches of 5 draws (XLA's loop only), then Adam (no
    propagator): the distinct kernels in the specs' order (not sorted: the other way
    round, the other order), each spec's in the manifest, not only the first's."""
    monkeypatch.delenv(KERNEL_VARIABLE, raising=False)
    specs = [
        ExperimentSpec(widths=(4,), runs=2, **values)
        for values in ({}, dict(optimizer="sgd", batch_size=5), dict(optimizer="adam"))
    ]
    expected = "xla" if auto_kernel == "xla" else f"{auto_kernel},xla"
    assert provenance.settings(specs) == {"kernels": expected}
    manifest = provenance.manifest([s.to_dict() for s in specs], specs)
    assert manifest["settings"] == {"kernels": expected}
    backwards = "xla" if auto_kernel == "xla" else f"xla,{auto_kernel}"
    assert provenance.settings(specs[::-1]) == {"kernels": backwards}


@pytest.mark.parametrize("then", ["gd", "spec", "other"])
def test_a_manifest_of_an_older_gdrelu_resumes_where_its_kernel_is_this_machines(
    then, tmp_path, monkeypatch
):
    """Before `kernels`, a manifest held `kernel`: full-batch GD's in float64 where the
    run started, whatever the spec's optimizer (until 879a849), then the spec's own (here
    Adam's "none"). Where either is this machine's, every spec's kernel resolves alike and
    the run resumes; otherwise the resume is refused naming both."""
    monkeypatch.delenv(KERNEL_VARIABLE, raising=False)
    specs = [ExperimentSpec(widths=(4,), runs=2, optimizer="adam")]
    now = provenance.manifest([s.to_dict() for s in specs], specs)
    gd = provenance.gd_kernel()
    was = {"gd": gd, "spec": "none", "other": "interpret"}[then]
    store.write_manifest(tmp_path, {**now, "settings": {"kernel": was}})
    if then != "other":
        store.check_manifest(tmp_path, now)
    else:
        with pytest.raises(store.ResumeError, match=f"kernel 'interpret', this run has '{gd}'"):
            store.check_manifest(tmp_path, now)


def test_the_manifest_refuses_another_kernel(tmp_path, monkeypatch, auto_kernel):
    """The propagator's kernel ($GDRELU_PROPAGATOR_KERNEL) changes results: it is recorded
    and a resume with another one is refused, naming it; versions are not checked."""
    trained = [ExperimentSpec(widths=(4,), runs=2)]
    specs = [s.to_dict() for s in trained]
    monkeypatch.delenv(KERNEL_VARIABLE, raising=False)
    started = provenance.manifest(specs, trained)
    assert started["settings"] == {"kernels": auto_kernel} and set(started["versions"]) == {
        "jax",
        "jaxlib",
    }
    store.write_manifest(tmp_path, started)
    later = {**provenance.manifest(specs, trained), "versions": {"jax": "0"}}
    store.check_manifest(tmp_path, later)
    monkeypatch.setenv(KERNEL_VARIABLE, "interpret")
    refused = f"kernels '{auto_kernel}', this run has 'interpret'"
    with pytest.raises(store.ResumeError, match=refused):
        store.check_manifest(tmp_path, provenance.manifest(specs, trained))


def test_a_refused_kernel_names_the_flag_that_resumes(tmp_path, monkeypatch, auto_kernel):
    """Specs started under each kernel they can take and resumed under another whose
    kernels differ: the refusal names a --kernel (which sets $GDRELU_PROPAGATOR_KERNEL)
    under which the same check passes. GD alone (every kernel); GD and Adam (all but
    the Pallas kernel's interpret mode, which trains full-batch GD only); GD, Adam and SGD
    on minibatches of 5 draws, which only XLA's loop trains (auto and xla)."""
    native = ["native"] if auto_kernel == "native" else []
    spec = functools.partial(ExperimentSpec, widths=(4,), runs=2)
    grids = [
        ([spec()], ["xla", "auto", "interpret", *native]),
        ([spec(), spec(optimizer="adam")], ["xla", "auto", *native]),
        ([spec(), spec(optimizer="adam"), spec(optimizer="sgd", batch_size=5)], ["xla", "auto"]),
    ]
    refused = 0
    for specs, kernels in grids:
        as_dicts = [s.to_dict() for s in specs]
        for started, now in itertools.product(kernels, kernels):
            monkeypatch.setenv(KERNEL_VARIABLE, started)
            store.write_manifest(tmp_path, provenance.manifest(as_dicts, specs))
            monkeypatch.setenv(KERNEL_VARIABLE, now)
            try:
                store.check_manifest(tmp_path, provenance.manifest(as_dicts, specs))
                continue
            except store.ResumeError as e:
                flag = re.fullmatch(r".*: resume with --kernel (\w+)", str(e)).group(1)
            refused += 1
            monkeypatch.setenv(KERNEL_VARIABLE, flag)
            store.check_manifest(tmp_path, provenance.manifest(as_dicts, specs))
    assert refused == (20 if native else 4)  # the pairs whose kernels differ here


def test_kernels_that_no_flag_here_gives_are_said_to_be_another_machines(
    tmp_path, monkeypatch, auto_kernel
):
    """No --kernel is named where the one that would give the recorded kernels is the one
    asked for already (an older gdrelu's record, another machine's), nor for a record
    that is not a list of kernels."""
    specs = [ExperimentSpec(widths=(4,), runs=2)]
    as_dicts = [s.to_dict() for s in specs]
    now = "native" if auto_kernel == "native" else "xla"
    monkeypatch.setenv(KERNEL_VARIABLE, now)
    started = provenance.manifest(as_dicts, specs)
    # kernels that `kernel_flag` maps to the kernel asked for, which gives other ones here
    other = {"native": "xla,general-native", "xla": "none,xla"}[now]
    for recorded in (None, other):
        store.write_manifest(tmp_path, {**started, "settings": {"kernels": recorded}})
        with pytest.raises(store.ResumeError) as refused:
            store.check_manifest(tmp_path, provenance.manifest(as_dicts, specs))
        assert str(refused.value).endswith(
            ": no kernel here gives them (another machine or gdrelu started it)"
        ), refused.value


def test_the_recorded_versions_and_the_spec_hash(monkeypatch):
    """versions() names jax's and jaxlib's own versions (told apart here: they are often
    equal); spec_hash is a sha256 that does not depend on the order of a spec's keys (a
    spec read back from JSON may come in another order) and changes with a value."""
    import jaxlib

    monkeypatch.setattr(jaxlib, "__version__", "0.0.jaxlib")
    assert provenance.versions() == {"jax": jax.__version__, "jaxlib": jaxlib.__version__}
    spec = ExperimentSpec(widths=(4,), runs=2).to_dict()
    reordered = dict(reversed(list(spec.items())))
    assert list(reordered) != list(spec)
    digest = provenance.spec_hash([spec])
    assert re.fullmatch("[0-9a-f]{64}", digest)
    assert provenance.spec_hash([reordered]) == digest
    assert provenance.spec_hash([{**spec, "seed": 1}]) != digest
    trained = [ExperimentSpec(widths=(4,), runs=2), ExperimentSpec(widths=(4,), runs=2, seed=1)]
    both = [s.to_dict() for s in trained]
    assert provenance.manifest(both, trained)["spec_hash"] == provenance.spec_hash(both)


def test_the_manifest_names_only_the_fields_that_differ(tmp_path):
    """The manifest's JSON lists equal the spec's tuples: another seed is named alone."""
    import dataclasses

    spec = ExperimentSpec(widths=(4, 8), deltas=(0.0, 0.1), runs=2)
    store.write_manifest(tmp_path, provenance.manifest([spec.to_dict()], [spec]))
    store.check_manifest(tmp_path, provenance.manifest([spec.to_dict()], [spec]))
    other = dataclasses.replace(spec, seed=1)
    said = r"\(differs in seed: recorded 0, this run has 1\)$"
    with pytest.raises(store.ResumeError, match=said):
        store.check_manifest(tmp_path, provenance.manifest([other.to_dict()], [other]))


def test_a_field_that_one_side_lacks_differs(tmp_path):
    """A spec field that only this run has (the manifest of an older gdrelu lacks it) or
    that only the manifest has differs, whichever side lacks it: a resume is refused
    naming it as not recorded."""
    assert provenance.differing_fields({"runs": 2}, {"runs": 2, "seed": 0}) == ["seed"]
    assert provenance.differing_fields({"runs": 2, "seed": 0}, {"runs": 2}) == ["seed"]
    spec = ExperimentSpec(widths=(4,), runs=2)
    now = provenance.manifest([spec.to_dict()], [spec])
    older = {k: v for k, v in spec.to_dict().items() if k != "stuck_rule"}
    store.write_manifest(tmp_path, {**now, "specs": [older]})
    said = 'differs in stuck_rule: not recorded, this run has "auto"'
    with pytest.raises(store.ResumeError, match=re.escape(said)):
        store.check_manifest(tmp_path, now)
    store.write_manifest(tmp_path, {**now, "specs": [{"widths": [4], "runs": 2}]})
    fields = len(spec.to_dict()) - 2  # each was listed, "not recorded"
    said = f"records a spec without {fields} of its fields (data, dim, num_train, ...)"
    with pytest.raises(store.ResumeError, match=re.escape(said)):
        store.check_manifest(tmp_path, now)


TEN = [2**k for k in range(1, 11)]  # 2, 4, ..., 1024: 56 characters as JSON


@pytest.mark.parametrize(
    ("was", "now", "said"),
    [
        (200, 100, "recorded 200, given 100"),
        # long values from a little before where they first differ, not cut alike
        (TEN, [*TEN[:-1], 2048], "recorded ..., 256, 512, 1024], given ..., 256, 512, 2048]"),
        (TEN, [*TEN, 2048], "recorded ...6, 512, 1024], given ...6, 512, 1024, 2048]"),
        (None, [4], "not recorded, given [4]"),
        ([4], None, "recorded [4], given none"),
    ],
)
def test_a_refused_resume_shows_where_the_values_differ(was, now, said):
    as_recorded = [{} if v is None else {"widths": v} for v in (was, now)]
    assert provenance.recorded_and_given(*as_recorded, "widths") == f"widths: {said}"


def test_a_manifest_without_a_kernel_is_refused_in_one_clear_line(tmp_path):
    trained = [ExperimentSpec(widths=(4,), runs=2)]
    old = provenance.manifest([s.to_dict() for s in trained], trained)
    del old["settings"]
    store.write_manifest(tmp_path, old)
    with pytest.raises(store.ResumeError, match=r"records no kernels .* older gdrelu"):
        store.check_manifest(tmp_path, provenance.manifest(old["specs"], trained))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda text: text[: len(text) // 2], "is unreadable"),  # a copy cut short
        (lambda text: "[]", "records no spec"),
        (lambda text: json.dumps({**json.loads(text), "specs": [1]}), "records no spec"),
        (lambda text: json.dumps({**json.loads(text), "settings": []}), "settings out of shape"),
    ],
)
def test_a_damaged_manifest_is_refused_naming_what_is_wrong(edit, message, tmp_path):
    """A manifest cut or edited out of shape is refused as a ResumeError (reported in one
    line), not a JSONDecodeError, IndexError or TypeError from what reads it next."""
    trained = [ExperimentSpec(widths=(4,), runs=2)]
    started = provenance.manifest([s.to_dict() for s in trained], trained)
    store.write_manifest(tmp_path, started)
    path = tmp_path / store.MANIFEST
    path.write_text(edit(path.read_text()))
    for check in (store.read_manifest, lambda out: store.check_manifest(out, started)):
        with pytest.raises(store.ResumeError, match=message):
            check(tmp_path)


def test_a_run_records_its_kernel_and_a_resume_checks_it(
    tmp_path, monkeypatch, capsys, auto_kernel
):
    monkeypatch.delenv(KERNEL_VARIABLE, raising=False)
    out = tmp_path / "run"
    assert main(["run", *TINY_RUN, "--out", str(out), "--cache-dir", "none"]) == 0
    for name in ("manifest.json", "summary.json"):
        recorded = json.loads((out / name).read_text())
        assert recorded["settings"] == {"kernels": auto_kernel}, name
        assert recorded["versions"]["jax"] and recorded["versions"]["jaxlib"]
    capsys.readouterr()
    monkeypatch.setenv(KERNEL_VARIABLE, "interpret")
    assert main(["run", *TINY_RUN, "--resume", str(out), "--cache-dir", "none"]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "kernel" in err, err


def _write_section10(out_dir, rows, **summary_fields):
    """A small Section 10 run's files of `rows` written under `out_dir` as `gdrelu
    section10` writes them, its summary with `summary_fields` added."""
    best = section10.best_step_sizes(rows)
    summary = section10.summary(
        "small", section10.SCALES["small"], best, seconds=1.0, backend="cpu", seed=0
    )
    store.write_section10(out_dir, rows, section10.format_table(best), summary | summary_fields)


def test_section10_files_without_docstrings(tmp_path, monkeypatch):
    """Under python -OO every __doc__ is None: the summary's deviations do not come from one."""
    monkeypatch.setattr(section10, "__doc__", None)
    _write_section10(tmp_path, [SECTION10_ROW])
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["deviations"] and all(isinstance(d, str) for d in written["deviations"])
    assert written["settings"] == {"kernels": "none"} and (tmp_path / "section10.png").exists()


def test_a_diverged_configuration_writes_strict_json(tmp_path):
    """Every step size of a configuration diverged: its RMSEs are inf and its relative RMSE
    inf/inf; summary.json says null for them (json.dumps wrote Infinity and NaN, which
    jq and JavaScript refuse)."""
    rows = [dict(data="radial", dim=2, init="he", optimizer="adam", bias_init=bias,
                 step_size=step, validation_rmse=math.inf, test_rmse=math.inf,
                 test_rmse_se=math.inf)
            for bias in ("zero", "unif") for step in (0.1, 1.0)]  # fmt: skip
    _write_section10(tmp_path, rows)

    def refuse(constant):
        raise AssertionError(f"{constant} in summary.json")

    written = json.loads((tmp_path / "summary.json").read_text(), parse_constant=refuse)
    assert written["best"][0]["test_rmse"] is None
    assert written["best"][0]["relative_test_rmse"] is None
    assert (tmp_path / "section10.png").exists()


def _distinct(cell: Cell, k: int, runs: int) -> CellResult:
    """Cell k's result in which every value names its field j, run i and cell k
    (1000 k + 10 i + j, parameters 1000 k + 10 i + neuron / 100 per array), so that a
    unit read back with a field, run or cell in another's place shows."""
    i = np.arange(runs)[:, None]
    fields = {}
    for j, f in enumerate(SimulationResult._fields):
        if f != "params":
            fields[f] = 1000.0 * k + 10 * i[:, 0] + j
    fields.update(
        status=np.array([Status.STUCK, Status.CROSSED, Status.UNFINISHED][:runs], np.int8),
        escaped=(i[:, 0] + k) % 2 == 0,
        certificate_checked=(i[:, 0] + k) % 2 == 1,
        stop_step=(1000 * k + 10 * i[:, 0]).astype(np.int64),
    )
    neurons = np.arange(cell.width) / 100
    params = Params(*(1000.0 * k + 10 * i + neurons + q for q in (0.1, 0.2, 0.3)),
                    1000.0 * k + 10 * i[:, 0] + 0.4)  # fmt: skip
    return CellResult(cell, 1000.0 * k + i[:, 0] + 0.5, SimulationResult(params=params, **fields))


def test_a_stored_diverged_run_reads_escaped(tmp_path):
    """A unit an older gdrelu stored with a diverged run's `escaped` false (it classified a
    run of finite parameters and infinite loss by its pattern) reads back true, as
    `simulate` reports such a run now; the other runs keep theirs."""
    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=3)
    (cell,) = spec.cells()
    status = [Status.DIVERGED, Status.CROSSED, Status.STUCK]
    stored = finished_cell(cell, status, escaped=[False, False, True])
    (tmp_path / store.UNITS).mkdir()
    store.save_unit(tmp_path, "gd-w4", [stored], 1.0)
    ((_, result),) = store.load_unit(tmp_path, "gd-w4", spec.cells())
    np.testing.assert_array_equal(result.escaped, [True, False, True])


def test_units_round_trip(tmp_path):
    """Each cell of a unit is read back with its own step sizes and every value of its
    result, each of its own field and run (`_distinct`), in its dtype."""
    spec = ExperimentSpec(widths=(4,), deltas=(0.0, 0.1), runs=3)
    cells = [_distinct(cell, k, 3) for k, cell in enumerate(spec.cells())]
    assert store.load_unit(tmp_path, "gd-w4", spec.cells()) is None
    (tmp_path / store.UNITS).mkdir()
    assert store.stored_seconds(tmp_path) == 0.0
    store.save_unit(tmp_path, "gd-w4", cells, 2.5)
    store.save_unit(tmp_path, "gd-w8", cells, 0.25)
    assert store.stored_seconds(tmp_path) == 2.75  # what a resume adds to its own time
    loaded = store.load_unit(tmp_path, "gd-w4", spec.cells())
    assert len(loaded) == 2
    for (step, result), cr in zip(loaded, cells, strict=True):
        np.testing.assert_array_equal(step, cr.step_size)
        for f in SimulationResult._fields:
            for got, want in zip(jax.tree.leaves(getattr(result, f)),
                                 jax.tree.leaves(getattr(cr.result, f)), strict=True):  # fmt: skip
                np.testing.assert_array_equal(got, want, err_msg=f)
                assert np.asarray(got).dtype == np.asarray(want).dtype, f


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seed": 7}, "seed = 0, not 7"),
        ({"runs": 6}, "runs = 3, not 6"),
        ({"deltas": (0.1, 0.0)}, "delta = 0.0, not 0.1"),  # the cells in another order
        ({"step_factor": 0.5}, "step_factor = 1.0, not 0.5"),
        ({"deltas": (0.0,)}, "holds 2 cells, not 1"),
    ],
)
def test_a_unit_of_other_cells_is_refused(change, message, tmp_path):
    """A unit directory given to another spec (`run_experiment(units=...)` from Python,
    where no manifest guards it) is refused: its runs are another cell's or seed's."""
    spec = ExperimentSpec(widths=(4,), deltas=(0.0, 0.1), runs=3)
    store.save_unit(tmp_path, "gd-w4", [fake_result(cell, 3) for cell in spec.cells()], 1.0)
    other = ExperimentSpec(**{**spec.to_dict(), **change})
    with pytest.raises(store.ResumeError, match=re.escape(message)):
        store.load_unit(tmp_path, "gd-w4", other.cells())


def _stored_without(out_dir, name, array):
    """Unit `name` under `out_dir` rewritten without `array` (every cell's, or the unit's
    own), as a gdrelu from before it stored that array wrote it."""
    path = out_dir / store.UNITS / f"{name}.npz"
    with np.load(path) as stored:
        arrays = {k: v for k, v in stored.items() if k.rpartition("/")[2] != array}
    np.savez(path, **arrays)


def test_a_unit_from_before_cells_were_stored_is_read(tmp_path):
    """An older unit, without its cells, is read for a spec of as many runs per cell, and
    refused for another count (a unit of `runs` 3 in a run of 5): its cells cannot be
    compared, its run count can."""
    spec = ExperimentSpec(widths=(4,), deltas=(0.0, 0.1), runs=3)
    store.save_unit(tmp_path, "gd-w4", [fake_result(cell, 3) for cell in spec.cells()], 1.0)
    _stored_without(tmp_path, "gd-w4", "cell")
    assert len(store.load_unit(tmp_path, "gd-w4", spec.cells())) == 2
    more = ExperimentSpec(**{**spec.to_dict(), "runs": 5})
    with pytest.raises(store.ResumeError, match=r"gd-w4\.npz holds 3 runs of a cell, not 5:"):
        store.load_unit(tmp_path, "gd-w4", more.cells())


@pytest.mark.parametrize(("runs", "refused"), [(2, True), (3, False), (4, False), (6, True)])
def test_a_grown_cells_unit_holds_runs_to_max_runs(runs, refused, tmp_path):
    """A cell grown to a target half-width holds `runs` to `max_runs` runs (here 3 to 5)."""
    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=3, target_halfwidth=0.1, max_runs=5)
    store.save_unit(tmp_path, "gd-w4", [fake_result(c, runs) for c in spec.cells()], 1.0)
    if refused:
        with pytest.raises(store.ResumeError, match=f"holds {runs} runs of a cell, not 3 to 5"):
            store.load_unit(tmp_path, "gd-w4", spec.cells())
    else:
        assert len(store.load_unit(tmp_path, "gd-w4", spec.cells())[0][0]) == runs


@pytest.mark.parametrize(("stop_on", "checked"), [(None, True), (("crossed",), False)])
def test_a_unit_from_before_the_certificate_check_was_stored_reads_its_spec(
    stop_on, checked, tmp_path
):
    """A unit stores whether its runs met the certificate's rules and is read back as
    stored; an older unit without that record takes it from its spec's stop_on."""
    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=3, stop_on=stop_on)
    (result,) = [fake_result(cell, 3) for cell in spec.cells()]
    flipped = result.result._replace(certificate_checked=np.full(3, not checked))
    store.save_unit(tmp_path, "gd-w4", [result._replace(result=flipped)], 1.0)
    ((_, loaded),) = store.load_unit(tmp_path, "gd-w4", spec.cells())
    np.testing.assert_array_equal(loaded.certificate_checked, [not checked] * 3)
    _stored_without(tmp_path, "gd-w4", "certificate_checked")
    ((_, older),) = store.load_unit(tmp_path, "gd-w4", spec.cells())
    np.testing.assert_array_equal(older.certificate_checked, [checked] * 3)
    assert older.certificate_checked.dtype == bool


def test_a_unit_follows_its_data_file_by_content_not_path(tmp_path):
    """A unit records a data file by its content hash: the same points at another path
    are its cells (a moved file), other points at the same path are refused (from Python
    no manifest guards `run_experiment(spec, units=DIR)`)."""
    data, moved = tmp_path / "d.csv", tmp_path / "moved.csv"
    for path in (data, moved):
        path.write_text(POINTS)

    def cells(path):
        return ExperimentSpec(data="file", data_file=str(path), step_size="ntk", widths=(4,),
                              deltas=(0.0,), runs=3).cells()  # fmt: skip

    units = tmp_path / "run"
    store.save_unit(units, "gd-w4", [fake_result(cell, 3) for cell in cells(data)], 1.0)
    assert len(store.load_unit(units, "gd-w4", cells(moved))) == 1
    data.write_text(POINTS.replace("3,2", "3,-4"))
    with pytest.raises(store.ResumeError, match="trained with data_sha256 = '"):
        store.load_unit(units, "gd-w4", cells(data))


def test_a_unit_from_before_its_seconds_were_stored_counts_as_none(tmp_path):
    """A unit without its training time (written before gdrelu stored it) counts 0 s in
    `stored_seconds`, beside the units that have one, and is read as it is."""
    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=3)
    cells = [fake_result(cell, 3) for cell in spec.cells()]
    store.save_unit(tmp_path, "gd-w4", cells, 2.5)
    store.save_unit(tmp_path, "gd-w8", cells, 0.25)
    _stored_without(tmp_path, "gd-w4", "seconds")
    assert store.stored_seconds(tmp_path) == 0.25
    assert len(store.load_unit(tmp_path, "gd-w4", spec.cells())) == 1


@pytest.mark.parametrize("kept", [0, 100])  # an empty file (EOFError), one cut short
def test_an_unreadable_unit_is_named(kept, tmp_path):
    """Reading a unit back (`load_unit`) or counting its seconds, a damaged unit is named
    as a ResumeError that says to delete it, not numpy's or zipfile's error."""
    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=3)
    store.save_unit(tmp_path, "gd-w4", [fake_result(cell, 3) for cell in spec.cells()], 1.0)
    path = tmp_path / store.UNITS / "gd-w4.npz"
    path.write_bytes(path.read_bytes()[:kept])
    said = r"gd-w4.npz is not a readable unit .*delete it to train its runs again"
    with pytest.raises(store.ResumeError, match=said):
        store.load_unit(tmp_path, "gd-w4", spec.cells())
    with pytest.raises(store.ResumeError, match=said):
        store.stored_seconds(tmp_path)
    assert not files_left_open(lambda: store.load_unit(tmp_path, "gd-w4", spec.cells()),
                               store.ResumeError)  # fmt: skip


def test_a_unit_that_holds_one_array_is_named(tmp_path):
    """A unit overwritten with one array (`np.save`'s format, which `np.load` returns as
    an array, not an archive) is a ResumeError that names it, not a TypeError."""
    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=3)
    store.save_unit(tmp_path, "gd-w4", [fake_result(cell, 3) for cell in spec.cells()], 1.0)
    path = tmp_path / store.UNITS / "gd-w4.npz"
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))
    said = r"gd-w4.npz is not a readable unit .*one array, not an NPZ archive"
    with pytest.raises(store.ResumeError, match=said):
        store.load_unit(tmp_path, "gd-w4", spec.cells())
    with pytest.raises(store.ResumeError, match=said):
        store.stored_seconds(tmp_path)


def test_a_unit_of_python_objects_is_named_in_gdrelus_words(tmp_path):
    """A damaged header that reads as an object array gave numpy's advice to pass
    allow_pickle=True, which gdrelu must not do with a file it did not write."""
    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=3)
    store.save_unit(tmp_path, "gd-w4", [fake_result(cell, 3) for cell in spec.cells()], 1.0)
    path = tmp_path / store.UNITS / "gd-w4.npz"
    with np.load(path) as stored:
        arrays = {**stored, "0/status": np.array([None, 1, 2])}
    np.savez(path, **arrays)
    said = r"gd-w4.npz is not a readable unit \(it holds Python objects, which gdrelu never "
    with pytest.raises(store.ResumeError, match=said + r"stores\); delete it"):
        store.load_unit(tmp_path, "gd-w4", spec.cells())


def test_run_experiment_refuses_the_units_of_another_spec(tmp_path):
    """The path as a str, as a user types it; a second spec with another seed is refused
    instead of returning the first spec's runs as its own."""
    from gdrelu.runner import run_experiment

    spec = ExperimentSpec(widths=(8,), deltas=(0.0,), runs=40, check_every=200, max_checks=2)
    first = run_experiment(spec, units=str(tmp_path))
    again = run_experiment(spec, units=str(tmp_path))  # read back
    np.testing.assert_array_equal(first[0].result.final_loss, again[0].result.final_loss)
    with pytest.raises(store.ResumeError, match="seed = 0, not 1"):
        run_experiment(dataclasses.replace(spec, seed=1), units=str(tmp_path))


def test_a_manifest_of_more_specs_is_refused_naming_both_counts(tmp_path):
    """A compare started with two optimizers, checked against one spec: refused as a
    ResumeError that names both counts (not a ValueError from pairing the specs)."""
    gd = ExperimentSpec(widths=(4,), runs=2)
    adam = dataclasses.replace(gd, optimizer="adam")
    both = provenance.manifest([gd.to_dict(), adam.to_dict()], [gd, adam])
    store.write_manifest(tmp_path, both)
    with pytest.raises(store.ResumeError, match="started with 2 specs, this run has 1"):
        store.check_manifest(tmp_path, provenance.manifest([gd.to_dict()], [gd]))


def test_a_data_file_is_checked_by_its_content_on_resume(tmp_path):
    """docs/design.md, "Resume": where the manifest records the data file's hash (as
    `gdrelu run` does), the file may have moved (another path resumes) but not changed
    (refused, naming the data file); a manifest without the hash (one written from Python)
    names the file by its path alone, so another path is refused."""
    data, moved = tmp_path / "d.csv", tmp_path / "moved.csv"
    for path in (data, moved):
        path.write_text(POINTS)

    def manifest(path, hashed=True):
        spec = ExperimentSpec(data="file", data_file=str(path), step_size="ntk", widths=(4,),
                              runs=2)  # fmt: skip
        recorded = provenance.manifest([spec.to_dict()], [spec])
        if hashed:  # as cli/run.py records it
            recorded["settings"]["data_sha256"] = [spec.data_sha256]
        return recorded

    hashed, unhashed = tmp_path / "hashed", tmp_path / "unhashed"
    for out in (hashed, unhashed):
        out.mkdir()
        store.write_manifest(out, manifest(data, hashed=out == hashed))
    store.check_manifest(hashed, manifest(moved))
    with pytest.raises(store.ResumeError, match="differs in data_file"):
        store.check_manifest(unhashed, manifest(moved, hashed=False))
    data.write_text(POINTS.replace("3,2", "3,-4"))
    with pytest.raises(store.ResumeError, match=r"started on another data file \(its SHA-256"):
        store.check_manifest(hashed, manifest(data))


def test_summary_json_is_strict_whatever_holds_the_numbers(tmp_path):
    """docs/outputs.md: a non-finite number is written null, also inside a tuple (as a
    Python caller's summary may hold an interval)."""
    _write_section10(tmp_path, [SECTION10_ROW], interval=(0.25, math.inf, (math.nan, 1.0)))
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["interval"] == [0.25, None, [None, 1.0]]


@pytest.mark.parametrize("edit", ["drop", "add"])
def test_a_unit_recording_other_cell_fields_is_refused(edit, tmp_path):
    """A unit whose recorded cell lacks a field of this cell (or records one this cell does
    not have) does not say it was trained as this cell: refused, naming the field."""
    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=3)
    store.save_unit(tmp_path, "gd-w4", [fake_result(cell, 3) for cell in spec.cells()], 1.0)
    path = tmp_path / store.UNITS / "gd-w4.npz"
    with np.load(path) as stored:
        arrays = dict(stored.items())
    cell = json.loads(str(arrays["0/cell"]))
    if edit == "drop":
        del cell["seed"]
        message = "seed = None, not 0"
    else:
        cell["zeta"] = 1
        message = "zeta = 1, not None"
    arrays["0/cell"] = np.asarray(json.dumps(cell))
    np.savez(path, **arrays)
    with pytest.raises(store.ResumeError, match=re.escape(message)):
        store.load_unit(tmp_path, "gd-w4", spec.cells())


def test_parts_round_trip_and_go_once_their_units_are_stored(tmp_path):
    """A batch's runs are stored as a part of its units, found by cell and run index
    (parts of other units passed over), timed into `stored_seconds` until those units are
    stored, and removed only then."""
    spec = ExperimentSpec(widths=(4,), deltas=(0.0, 0.1), runs=6)
    zero, tenth = spec.cells()
    other = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=6, optimizer="sgd").cells()[0]
    assert store.part_runs(tmp_path, spec.cells(), ["gd-w4"]) == {}
    straddling = [(fake_result(zero, 2), np.array([4, 5])), (fake_result(tenth, 1), np.array([0]))]
    store.save_part(tmp_path, [(fake_result(zero, 3), np.array([0, 2, 1]))], 1.5, ["gd-w4"])
    store.save_part(tmp_path, straddling, 2.0, ["gd-w4"])
    store.save_part(tmp_path, [(fake_result(other, 1), np.array([3]))], 0.25, ["sgd-w4"])
    runs = store.part_runs(tmp_path, spec.cells(), ["gd-w4"])
    assert set(runs) == {zero, tenth}
    np.testing.assert_array_equal(runs[zero], [0, 1, 2, 4, 5])
    np.testing.assert_array_equal(runs[tenth], [0])
    found, seconds = store.load_parts(tmp_path, [tenth], ["gd-w4"])
    assert seconds == 2.0  # the straddling batch's, once
    ((indices, step, result),) = found[tenth]
    np.testing.assert_array_equal(indices, [0])
    np.testing.assert_array_equal(step, [0.5])
    assert result.status.tolist() == [Status.CROSSED] and result.params.a.shape == (1, 4)
    assert store.stored_seconds(tmp_path) == 3.75
    store.remove_superseded_parts(tmp_path)  # no unit stored: every part stays
    assert len(store.part_runs(tmp_path, spec.cells(), ["gd-w4"])[zero]) == 5
    store.save_unit(tmp_path, "gd-w4", [fake_result(c, 6) for c in spec.cells()], 10.0)
    assert store.stored_seconds(tmp_path) == 10.25  # gd-w4's parts are in its unit now
    assert store.part_runs(tmp_path, spec.cells(), ["gd-w4"]) == {}
    store.remove_superseded_parts(tmp_path)
    assert len(list((tmp_path / store.UNITS / store.PARTS).glob("*.npz"))) == 1  # sgd's
    store.save_unit(tmp_path, "sgd-w4", [fake_result(other, 6)], 1.0)
    store.remove_superseded_parts(tmp_path)
    assert not (tmp_path / store.UNITS / store.PARTS).exists()


def test_a_part_of_other_cells_is_refused(tmp_path):
    """A part of a unit of these names that holds another seed's cell at one of these
    cells' width and Δ is refused, as such a unit is."""
    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=3)
    other = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=3, seed=7).cells()[0]
    store.save_part(tmp_path, [(fake_result(other, 2), np.array([0, 1]))], 1.0, ["gd-w4"])
    with pytest.raises(store.ResumeError, match=re.escape("seed = 7, not 0")):
        store.part_runs(tmp_path, spec.cells(), ["gd-w4"])


def test_a_refused_part_names_what_differs_from_its_closest_cell(tmp_path):
    """Cells that share width and Δ (a Section 10 group's step sizes): a part of another
    seed is compared with the cell it differs from least, so the message names the seed."""
    zero, unif = (ExperimentSpec(widths=(4,), deltas=(0.0,), runs=3, bias_init=b).cells()[0]
                  for b in ("zero", "unif"))  # fmt: skip
    seeded = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=3, bias_init="unif", seed=7)
    store.save_part(tmp_path, [(fake_result(seeded.cells()[0], 2), np.arange(2))], 1.0, ["g"])
    with pytest.raises(store.ResumeError, match=re.escape("seed = 7, not 0")):
        store.part_runs(tmp_path, [zero, unif], ["g"])  # not "bias_init = 'unif', not 'zero'"
    assert store.part_runs(tmp_path, [zero, unif], ["other"]) == {}  # another unit's part


def test_parts_a_kill_left_after_their_units_go_at_the_next_run(tmp_path):
    from gdrelu import runner

    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=2)
    (cell,) = spec.cells()
    store.save_part(tmp_path, [(fake_result(cell, 2), np.array([0, 1]))], 1.0, ["gd-w4"])
    store.save_unit(tmp_path, "gd-w4", [fake_result(cell, 2)], 1.0)
    assert store.stored_seconds(tmp_path) == 1.0
    runner.run_experiment(spec, units=tmp_path)  # every unit stored: nothing trains
    assert not (tmp_path / store.UNITS / store.PARTS).exists()


def test_an_unreadable_part_is_named(tmp_path):
    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=2)
    piece = (fake_result(spec.cells()[0], 2), np.array([0, 1]))
    store.save_part(tmp_path, [piece], 1.0, ["gd-w4"])
    (path,) = (tmp_path / store.UNITS / store.PARTS).glob("*.npz")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(store.ResumeError, match=r"is not a readable part .*train its runs again"):
        store.part_runs(tmp_path, spec.cells(), ["gd-w4"])
    for read in (lambda: store.part_runs(tmp_path, spec.cells(), ["gd-w4"]),
                 lambda: store.remove_superseded_parts(tmp_path),
                 lambda: store.stored_seconds(tmp_path)):  # fmt: skip
        assert not files_left_open(read, store.ResumeError)


def _work_order_batches(work, limit):
    """`runner.batch_plan`'s batches of `limit` runs in work order, default blocks."""
    sizes = np.array([idx.size for _, idx in work])
    starts = np.cumsum(sizes) - sizes
    batches = []
    for first in range(0, sizes.sum(), limit):
        lows = np.clip(first - starts, 0, sizes)
        highs = np.clip(first + limit - starts, 0, sizes)
        batches.append([(i, work[i][1][lows[i] : highs[i]]) for i in np.flatnonzero(lows < highs)])
    return batches, None, None


def _killed_in_batch(monkeypatch, kill_at, trained):
    """`runner._train_batch` training as before, each batch's cells appended to `trained`
    as (Δ, first run, runs), `Killed` raised by the batch numbered `kill_at` from 1."""
    from gdrelu import runner

    train_batch = runner._train_batch

    def killed(work, **kwargs):
        trained.append([(cell.delta, int(idx.min()), idx.size) for cell, idx in work])
        if len(trained) == kill_at:
            raise Killed
        return train_batch(work, **kwargs)

    monkeypatch.setattr(runner, "_train_batch", killed)


def _assert_same_runs(got, want):
    """Every cell of `got` is `want`'s, with its step sizes and result to the bit."""
    for got_cell, want_cell in zip(got, want, strict=True):
        assert got_cell.cell == want_cell.cell
        leaves = zip(jax.tree.leaves(got_cell[1:]), jax.tree.leaves(want_cell[1:]), strict=True)
        for a, b in leaves:
            np.testing.assert_array_equal(a, b)


def test_a_bucket_killed_between_batches_resumes_from_its_finished_batches(tmp_path, monkeypatch):
    """A bucket trained in several batches stores each as it ends; killed in its second
    batch, a resume reads the first and trains the second as the uninterrupted run did
    (batches of half the work: planned on the runs left, the resume would train two
    batches of 20), and every run equals the uninterrupted run's, to the bit; so does a
    resume whose budget takes every run in one batch, which trains only the runs left.
    Batches of 40 runs reuse the programs of the 40-run tests above."""
    from gdrelu import runner

    run_dir, copy = tmp_path / "run", tmp_path / "one-batch"
    halves = lambda work, **_: _work_order_batches(work, sum(i.size for _, i in work) // 2)  # noqa: E731
    monkeypatch.setattr(runner, "batch_plan", halves)
    spec = ExperimentSpec(widths=(8,), deltas=(0.0, 0.1), runs=40, check_every=200,
                          max_checks=2)  # fmt: skip
    whole = runner.run_experiment(spec)
    trained, seen = [], []
    _killed_in_batch(monkeypatch, 2, trained)
    with pytest.raises(Killed):
        runner.run_experiment(spec, units=run_dir)
    stored = store.part_runs(run_dir, spec.cells(), ["gd-w8"])
    assert {c.delta: idx.tolist() for c, idx in stored.items()} == {0.0: list(range(40))}
    assert store.stored_seconds(run_dir) > 0
    assert runner.cells_in_parts(spec, units=run_dir) == spec.cells()[:1]  # the ETA's
    assert runner.first_batches(spec, memory_budget=1 << 30, units=run_dir) == [spec.cells()[1:]]
    shutil.copytree(run_dir, copy)
    trained.clear()
    announced = []
    resumed = runner.run_experiment(
        spec,
        units=run_dir,
        on_check=lambda w, k, s: seen.append(s.size),
        on_batches=announced.append,
    )
    assert trained == [[(0.1, 0, 40)]] and announced == [[spec.cells()[1:]]]
    assert seen[-1] == 80  # the stored runs count as finished on the bar
    _assert_same_runs(resumed, whole)
    assert not (run_dir / store.UNITS / store.PARTS).exists()  # the unit holds them now
    assert (run_dir / store.UNITS / "gd-w8.npz").exists()
    # resumed with a budget that takes every run in one batch: the stored runs are read,
    # the others trained (in a batch of their own)
    monkeypatch.setattr(runner, "batch_plan", lambda work, **_: _work_order_batches(work, 80))
    trained.clear()
    again = runner.run_experiment(spec, units=copy)
    assert trained == [[(0.1, 0, 40)]]
    _assert_same_runs(again, whole)


def test_a_growing_bucket_replays_its_rounds_from_its_stored_batches(tmp_path, monkeypatch):
    """With a target half-width the first pass is stored even in one batch (the growth
    may be long), and so is each grown batch; killed in the second batch of the first
    round, a resume replays the rounds, reading the batches stored and training the
    others, and every cell ends as the uninterrupted run's, run for run."""
    from gdrelu import runner

    monkeypatch.setattr(runner, "batch_plan", lambda work, **_: _work_order_batches(work, 40))
    spec = ExperimentSpec(widths=(8,), deltas=(0.0, 0.1), runs=40, check_every=200,
                          max_checks=2, target_halfwidth=0.001, max_runs=120)  # fmt: skip
    whole = runner.run_experiment(spec)
    assert [cr.result.status.size for cr in whole] == [120, 120]
    trained = []
    _killed_in_batch(monkeypatch, 4, trained)
    with pytest.raises(Killed):
        runner.run_experiment(spec, units=tmp_path)
    assert trained == [[(0.0, 0, 40)], [(0.1, 0, 40)], [(0.0, 40, 40)], [(0.1, 40, 40)]]
    stored = store.part_runs(tmp_path, spec.cells(), ["gd-w8"])
    assert [stored[cell].tolist() for cell in spec.cells()] == [list(range(80)), list(range(40))]
    trained.clear()
    resumed = runner.run_experiment(spec, units=tmp_path)
    assert trained == [[(0.1, 40, 40)], [(0.0, 80, 40)], [(0.1, 80, 40)]]
    _assert_same_runs(resumed, whole)
    assert not (tmp_path / store.UNITS / store.PARTS).exists()


def test_a_unit_stored_before_a_kill_removes_its_parts_and_their_seconds(tmp_path, monkeypatch):
    """Killed after a bucket's first unit and before its second: the parts holding both
    widths' runs count their seconds once (in the first unit), and go once the second
    unit is stored on resume. (Training is faked: 10 s per batch.)"""
    from gdrelu import runner

    _fake_batches(monkeypatch, 4, [])
    spec = ExperimentSpec(widths=(4, 6), deltas=(0.0,), runs=6, buckets="one")
    save_unit = store.save_unit

    def killed_after_the_first(out_dir, name, *args):
        if name == "gd-w6":
            raise KeyboardInterrupt
        save_unit(out_dir, name, *args)

    monkeypatch.setattr(store, "save_unit", killed_after_the_first)
    with pytest.raises(KeyboardInterrupt):
        runner.run_experiment(spec, units=tmp_path)
    assert store.stored_seconds(tmp_path) == 30.0  # three batches, in gd-w4's unit
    monkeypatch.setattr(store, "save_unit", save_unit)
    runner.run_experiment(spec, units=tmp_path)
    assert store.stored_seconds(tmp_path) == 30.0  # width 6 read from parts: nothing trained
    assert not (tmp_path / store.UNITS / store.PARTS).exists()


def _fake_batches(monkeypatch, limit, trained, kill_at=None):
    """`runner._train_batch` stubbed (each run's step size its index + 0.5, 10 s of
    `runner.time` per batch, the runs of each batch appended to `trained`, `Killed` raised
    by the batch numbered `kill_at` from 1), in batches of `limit` runs in work order."""
    import types

    from gdrelu import runner

    clock = types.SimpleNamespace(now=0.0)

    def train(work, **kwargs):
        trained.append([idx.tolist() for _, idx in work])
        if len(trained) == kill_at:
            raise Killed
        clock.now += 10.0
        return [fake_result(cell, idx.size)._replace(step_size=idx + 0.5) for cell, idx in work]

    monkeypatch.setattr(runner, "_train_batch", train)
    monkeypatch.setattr(runner, "time", types.SimpleNamespace(perf_counter=lambda: clock.now))
    monkeypatch.setattr(runner, "batch_plan", lambda work, **_: _work_order_batches(work, limit))


def test_a_resume_with_another_budget_reads_the_stored_runs_of_a_batch_and_trains_the_rest(
    tmp_path, monkeypatch
):
    """Batches of 2 runs, killed in the third: runs 0-3 are stored. Resumed in batches of
    3, the first batch (0-2) is read whole and the second (3-5) trains only runs 4 and 5,
    read beside run 3: the cell holds runs 0-5 once each, in index order. Its unit's
    seconds are the three batches' (two before the kill, one after), not the resume's
    alone. (Training is faked: 10 s per batch.)"""
    from gdrelu import runner

    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=6)
    trained = []
    _fake_batches(monkeypatch, 2, trained, kill_at=3)
    with pytest.raises(Killed):
        runner.run_experiment(spec, units=tmp_path)
    (stored,) = store.part_runs(tmp_path, spec.cells(), ["gd-w4"]).values()
    assert stored.tolist() == [0, 1, 2, 3]
    trained.clear()
    _fake_batches(monkeypatch, 3, trained)
    (cell,) = runner.run_experiment(spec, units=tmp_path)
    assert trained == [[[4, 5]]]
    np.testing.assert_array_equal(cell.step_size, np.arange(6) + 0.5)
    assert cell.result.status.size == 6
    assert store.stored_seconds(tmp_path) == 30.0


@pytest.mark.parametrize("target", [None, 0.001])
def test_a_bucket_in_one_batch_stores_a_part_only_if_it_may_grow(target, tmp_path, monkeypatch):
    """A bucket trained in one batch goes to its unit at once: no part is written (a kill
    trains it again). With a target half-width it may grow for long, so its first pass
    is stored as a part: killed in the first added batch, a resume trains that batch
    alone. (Training is faked.)"""
    from gdrelu import runner

    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=3, target_halfwidth=target,
                          max_runs=6 if target else None)  # fmt: skip
    trained, saved = [], []
    save_part = store.save_part
    monkeypatch.setattr(store, "save_part", lambda d, p, *a: saved.append(p) or save_part(d, p, *a))
    _fake_batches(monkeypatch, 100, trained, kill_at=2 if target else None)
    if target is None:
        runner.run_experiment(spec, units=tmp_path)
        assert trained == [[[0, 1, 2]]] and saved == []
        return
    with pytest.raises(Killed):
        runner.run_experiment(spec, units=tmp_path)
    assert trained == [[[0, 1, 2]], [[3, 4, 5]]] and len(saved) == 1
    trained.clear()
    (cell,) = runner.run_experiment(spec, units=tmp_path)
    assert trained == [[[3, 4, 5]]]
    np.testing.assert_array_equal(cell.step_size, np.arange(6) + 0.5)


def test_a_run_stored_twice_is_held_once_with_its_own_values():
    """Parts of two memory budgets may hold a run twice: the runs held are unique and in
    index order, each with its own step size and result."""
    from gdrelu import parts

    cell = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=6).cells()[0]

    def piece(indices):
        indices = np.array(indices)
        cr = fake_result(cell, indices.size)
        result = cr.result._replace(stop_step=indices * 10)
        return indices, indices + 0.5, result

    held = parts.held_runs(cell, [piece([4, 5, 2]), piece([0, 2, 1]), piece([5])])
    np.testing.assert_array_equal(held.indices, [0, 1, 2, 4, 5])
    np.testing.assert_array_equal(held.result.step_size, held.indices + 0.5)
    np.testing.assert_array_equal(held.result.result.stop_step, held.indices * 10)
    assert held.result.result.params.a.shape == (5, 4)
