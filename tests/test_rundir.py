"""The run directory is this run's alone: a used directory is refused, a second process
is kept out, and a damaged or unwritable directory is reported in one line, not a
traceback after the compute; a Ctrl-C is never lost."""

import contextlib
import datetime
import errno
import json
import os
import shutil

import numpy as np
import pytest
from conftest import disk_full, finished_cell

from gdrelu import ExperimentSpec, store
from gdrelu.cli import main, outdir

# the runs of tests/test_store.py's TINY_RUN: their programs come from the suite's cache
TINY = ["--widths", "8", "--deltas", "0", "--runs", "40", "--check-every", "200",
        "--max-checks", "2", "--quiet"]  # fmt: skip


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_directory_holding_other_files_is_refused_and_left_alone(tmp_path, capsys):
    """Its runs.csv was overwritten (a user's file, or an earlier run's table)."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "runs.csv").write_text("my precious,table\n")
    assert main(["run", *TINY, "--out", str(out)]) == 2
    assert "is not empty (runs.csv)" in _one_line(capsys)
    assert sorted(os.listdir(out)) == ["runs.csv"]
    assert (out / "runs.csv").read_text() == "my precious,table\n"
    assert main(["run", *TINY, "--out", str(tmp_path / "empty")]) == 0  # new: fine


def test_two_runs_in_one_second_get_two_directories(tmp_path, monkeypatch, capsys):
    """runs/<timestamp> has a one-second resolution: the second run of a sweep started in
    the same second was refused as a 'started run'."""

    class Frozen(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.datetime(2026, 12, 5, 3, 0, 0)

    monkeypatch.setattr(outdir.datetime, "datetime", Frozen)
    monkeypatch.chdir(tmp_path)
    assert main(["run", *TINY]) == 0
    assert main(["run", *TINY, "--seed", "1"]) == 0
    assert sorted(os.listdir(tmp_path / "runs")) == ["20261205-030000", "20261205-030000-2"]
    second = json.loads((tmp_path / "runs" / "20261205-030000-2" / "manifest.json").read_text())
    assert second["specs"][0]["seed"] == 1


@pytest.fixture
def started(tmp_path):
    """A finished tiny run's directory (resumable: it is read back from its units)."""
    out = tmp_path / "run"
    assert main(["run", *TINY, "--out", str(out)]) == 0
    return out


def test_a_directory_another_process_writes_is_refused(started, capsys):
    """Two `--resume` of one directory (a requeued job, a second terminal) raced on the
    same temporary files; the second is refused while the first holds the lock."""
    fcntl = pytest.importorskip("fcntl")
    fd = os.open(started / outdir.LOCK, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as another process would hold it
    try:
        assert main(["run", "--resume", str(started), "--quiet"]) == 2
        assert "another gdrelu process is writing to" in _one_line(capsys)
    finally:
        os.close(fd)
    assert main(["run", "--resume", str(started), "--quiet"]) == 0  # released: fine


def test_a_started_run_another_process_writes_is_not_to_be_resumed_as_well(tmp_path, capsys):
    """`--out` at a started run that another process is writing said "finish it with
    --resume", which that process refuses; it says the directory is being written. Once
    the lock is free, the hint to resume is right again."""
    fcntl = pytest.importorskip("fcntl")
    out = tmp_path / "run"
    out.mkdir()
    (out / store.MANIFEST).write_text("{}")
    fd = os.open(out / outdir.LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as another process would hold it
    try:
        assert main(["run", *TINY, "--out", str(out)]) == 2
        assert (
            _one_line(capsys) == f"gdrelu: error: --out: another gdrelu process is writing to {out}"
        )
    finally:
        os.close(fd)
    assert main(["run", *TINY, "--out", str(out)]) == 2
    assert f"holds a started run; finish it with --resume {out}" in _one_line(capsys)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "units" / "gd-w8.npz").write_bytes(b""), "is not a readable unit"),
        (lambda d: _edited_manifest(d, settings=None), "records its settings out of shape"),
        (lambda d: _edited_manifest(d, specs=[]), "records no spec"),
    ],
)
def test_a_damaged_directory_is_refused_in_one_line(started, damage, message, capsys):
    """An empty unit ended in EOFError, settings of null in a TypeError."""
    damage(started)
    assert main(["run", "--resume", str(started), "--quiet"]) == 2
    assert message in _one_line(capsys)


def test_an_unreadable_unit_is_refused_before_the_bar_is_drawn(started, capsys):
    """Without --quiet: the error came after the bar's first state, on its line, and a
    second bar followed it. Now the units' recorded times are read before the bar, and
    the error is the only output."""
    (started / "units" / "gd-w8.npz").write_bytes(b"")
    assert main(["run", "--resume", str(started)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gdrelu: error: --resume: ") and err.count("\n") == 1, err


def _edited_manifest(out, **fields):
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, **fields}))


def test_a_full_disk_stops_the_run_in_one_line_that_says_how_to_finish(
    tmp_path, monkeypatch, capsys
):
    """write() gives no file name ('None' was printed); the hint comes only with a
    manifest to resume from, and a directory left without one can be used again."""

    out = tmp_path / "run"
    monkeypatch.setattr(store, "save_unit", disk_full)
    assert main(["run", *TINY, "--out", str(out)]) == 1
    assert (
        _one_line(capsys)
        == f"gdrelu: error: No space left on device; finish with: gdrelu run --resume {out}"
    )
    monkeypatch.undo()
    assert main(["run", "--resume", str(out), "--quiet"]) == 0

    early = tmp_path / "early"
    monkeypatch.setattr(store, "write_bytes", disk_full)  # the manifest cannot be written
    assert main(["run", *TINY, "--out", str(early)]) == 1
    assert _one_line(capsys) == "gdrelu: error: No space left on device"
    monkeypatch.undo()
    assert main(["run", *TINY, "--out", str(early)]) == 0


def test_a_units_folder_replaced_by_a_file_stops_the_run_in_one_line(tmp_path, monkeypatch, capsys):
    """units/ replaced by a file while the run trains (before its first unit is stored):
    one line naming the path and how to finish, exit 1, not a FileExistsError (or, for a
    part, NotADirectoryError) traceback."""
    out = tmp_path / "run"
    original = store.save_unit

    def replaced_first(out_dir, *args, **kwargs):
        shutil.rmtree(out_dir / store.UNITS)
        (out_dir / store.UNITS).write_text("not a folder")
        return original(out_dir, *args, **kwargs)

    monkeypatch.setattr(store, "save_unit", replaced_first)
    assert main(["run", *TINY, "--out", str(out)]) == 1
    line = _one_line(capsys)
    assert line.startswith("gdrelu: error: File exists: ") and str(out) in line, line
    assert line.endswith(f"; finish with: gdrelu run --resume {out}"), line
    (out / store.UNITS).unlink()
    monkeypatch.undo()
    assert main(["run", "--resume", str(out), "--quiet"]) == 0  # as the line says


def test_a_disk_full_at_the_manifest_leaves_the_directory_as_it_was(tmp_path, monkeypatch, capsys):
    """The disk fills while the manifest is flushed: the run ends in one line and leaves
    the empty --out it was given as empty as a run takes it, its lock aside (a temporary
    manifest left behind made the next run with the same --out refused as "not empty")."""

    out = tmp_path / "run"
    out.mkdir()
    monkeypatch.setattr(os, "fsync", disk_full)
    assert main(["run", *TINY, "--out", str(out)]) == 1
    assert _one_line(capsys) == "gdrelu: error: No space left on device"
    assert {p.name for p in out.iterdir()} <= {outdir.LOCK}


def test_a_filesystem_without_locks_runs_with_a_warning(tmp_path, monkeypatch):
    """NFS without lockd (ENOLCK) refused every run as 'another gdrelu process'."""
    fcntl = pytest.importorskip("fcntl")

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.warns(UserWarning, match="cannot be locked .No locks available."):
        assert main(["run", *TINY, "--out", str(tmp_path / "run")]) == 0


def test_a_directory_that_cannot_be_written_is_refused_before_training(
    started, monkeypatch, capsys
):
    """A resume into a read-only directory trained its first width, then crashed."""

    def read_only(self, data):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(type(started), "write_bytes", read_only)
    assert main(["run", "--resume", str(started), "--quiet"]) == 2
    assert "--resume: cannot write to" in _one_line(capsys)


def test_sigterm_stops_the_run_as_ctrl_c_does_with_exit_143(tmp_path, monkeypatch, capsys):
    """A batch scheduler's SIGTERM (its time limit) ended the run with no word (exit 143
    from the signal): it stops the run as Ctrl-C does, saying "terminated" and how to
    finish, exit code 143; the process's own SIGTERM handling is back afterwards."""
    import signal

    import gdrelu.runner

    original, before = gdrelu.runner.simulate, signal.getsignal(signal.SIGTERM)
    sent = [signal.SIGTERM, signal.SIGINT]

    def signalled(*args, **kwargs):  # the run's own code goes on until the handler raises
        os.kill(os.getpid(), sent.pop(0))
        return original(*args, **kwargs)

    monkeypatch.setattr(gdrelu.runner, "simulate", signalled)
    out = tmp_path / "run"
    assert main(["run", *TINY, "--out", str(out)]) == 143
    assert _one_line(capsys) == f"gdrelu: terminated; finish with: gdrelu run --resume {out}"
    assert signal.getsignal(signal.SIGTERM) is before
    assert main(["run", *TINY, "--out", str(tmp_path / "again")]) == 130  # Ctrl-C: 130 again
    assert _one_line(capsys).startswith("gdrelu: interrupted; finish with: ")
    monkeypatch.undo()
    assert main(["run", "--resume", str(out), "--quiet"]) == 0


@pytest.mark.parametrize("distributed", [False, True])
def test_the_command_leaves_at_once_when_interrupted(distributed, monkeypatch):
    """`gdrelu` (`cli.command`): an interrupted `main` (130 or 143) leaves past Python's
    shutdown, which segfaulted (exit 139) when Ctrl-C came while XLA compiled in its
    threads (a fresh-user review, 4 of 4 tries at 3 s with a cold cache). So does any
    other code, but with --distributed, whose processes part in JAX's exit handler: a
    plain exit there."""
    import signal

    import gdrelu.cli

    left, handlers = [], {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(gdrelu.cli, "leave_at_once", left.append)
    monkeypatch.setattr(gdrelu.cli, "_distributed", lambda: distributed)
    for code in (130, 143, 0, 2):
        monkeypatch.setattr(gdrelu.cli, "main", lambda code=code: code)
        with pytest.raises(SystemExit) as stop:
            gdrelu.cli.command()
        assert stop.value.code == code
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    assert left == ([130, 143] if distributed else [130, 143, 0, 2])


def test_a_ctrl_c_that_a_callback_swallowed_still_stops_the_run(tmp_path, monkeypatch, capsys):
    """Python drops a KeyboardInterrupt raised in a gc or weakref callback (JAX runs
    some): the run went on to its end with exit 0. The next check raises it again."""
    import signal

    import gdrelu.runner

    original = gdrelu.runner.simulate

    def swallowing(*args, **kwargs):
        with contextlib.suppress(KeyboardInterrupt):  # as a gc callback's is swallowed
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args, **kwargs)

    monkeypatch.setattr(gdrelu.runner, "simulate", swallowing)
    out = tmp_path / "run"
    assert main(["run", *TINY, "--out", str(out)]) == 130
    assert f"finish with: gdrelu run --resume {out}" in capsys.readouterr().err


def test_the_space_estimate_counts_every_cell_at_its_widest_and_largest_count(tmp_path):
    """`result_bytes`: each run's row and final parameters (3n + 1 numbers of 8 bytes,
    n up to the widest width), twice, for every cell (width × Δ) at its largest run count
    (`max_runs` with a target half-width), plus 1 MB; less room free is refused."""
    import collections
    import dataclasses
    import shutil

    from gdrelu.spec import ExperimentSpec

    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=10)
    one = outdir.result_bytes([spec]) - 2**20
    assert one > 0
    two_deltas = dataclasses.replace(spec, deltas=(0.0, 0.1))
    assert outdir.result_bytes([two_deltas]) - 2**20 == 2 * one
    grown = dataclasses.replace(spec, target_halfwidth=0.05, max_runs=100)
    assert outdir.result_bytes([grown]) - 2**20 == 10 * one
    wide = dataclasses.replace(spec, widths=(4, 4000))
    assert outdir.result_bytes([wide]) - 2**20 >= 2 * 10 * 8 * (3 * 4000 + 1)

    usage = collections.namedtuple("usage", "total used free")
    need = outdir.result_bytes([spec])
    for free, refused in ((need - 1, True), (need, False)):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(shutil, "disk_usage", lambda path, f=free: usage(2 * need, 0, f))
            if refused:
                with pytest.raises(outdir.UsageError, match="MiB free"):
                    outdir.check_space(tmp_path / "new" / "dir", need)
            else:
                outdir.check_space(tmp_path / "new" / "dir", need)


def test_a_refused_new_run_removes_the_batches_it_stored(tmp_path):
    """A run refused by a later batch's draws had stored its first batches as parts:
    they go with the manifest (the spec is refused, so they would serve no resume); a
    directory holding a unit stays as it is."""
    out = tmp_path / "o"
    (out / store.UNITS / store.PARTS).mkdir(parents=True)
    (out / store.MANIFEST).write_text("{}")
    (out / store.UNITS / store.PARTS / "0123.npz").write_bytes(b"part")
    outdir.discard_unstarted(out)
    assert list(out.iterdir()) == []  # not made by this run: the directory stays, empty
    (out / store.UNITS / store.PARTS).mkdir(parents=True)
    (out / store.MANIFEST).write_text("{}")
    (out / store.UNITS / "gd-w4.npz").write_bytes(b"unit")
    (out / store.UNITS / store.PARTS / "0123.npz").write_bytes(b"part")
    outdir.discard_unstarted(out)
    assert (out / store.MANIFEST).exists() and (out / store.UNITS / store.PARTS).is_dir()
    outdir.discard_unstarted(out, stored_too=True)  # a new run's own units: they go too
    assert list(out.iterdir()) == []


def test_a_run_refused_for_memory_by_its_runner_removes_a_new_directory_only(
    tmp_path, monkeypatch, capsys
):
    """A BudgetError from the runner (a batch that cannot fit, the runner stubbed) ends a
    new run in one line (exit 2) and removes the directory it started, as a bad step
    size does; the same error on --resume leaves the started run's manifest and the
    batches it stored, for a resume with more memory."""
    import gdrelu.runner
    from gdrelu.engine import Status
    from gdrelu.memory import BudgetError

    def refused(spec, **kwargs):
        raise BudgetError("width 8: one run needs more than the memory budget")

    def interrupted(spec, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gdrelu.runner, "run_experiment", refused)
    new = tmp_path / "new"
    assert main(["run", *TINY, "--out", str(new)]) == 2
    assert "width 8: one run needs" in _one_line(capsys)
    assert not new.exists()
    started = tmp_path / "started"
    monkeypatch.setattr(gdrelu.runner, "run_experiment", interrupted)
    assert main(["run", *TINY, "--out", str(started)]) == 130
    capsys.readouterr()
    spec = ExperimentSpec(widths=(8,), deltas=(0.0,), runs=40, check_every=200, max_checks=2)
    piece = (finished_cell(spec.cells()[0], [Status.CROSSED] * 20), np.arange(20))
    store.save_part(started, [piece], 1.0, ["gd-w8"])
    monkeypatch.setattr(gdrelu.runner, "run_experiment", refused)
    assert main(["run", "--resume", str(started), "--quiet"]) == 2
    assert "width 8: one run needs" in _one_line(capsys)
    assert (started / store.MANIFEST).exists()
    assert store.part_runs(started, spec.cells(), ["gd-w8"])[spec.cells()[0]].size == 20


def test_a_refused_new_run_keeps_the_empty_directory_the_user_gave(tmp_path):
    """`discard_unstarted` removes `out` only where this run created it: an empty --out
    the user made beforehand stays (emptied of the run's manifest and lock), one the run
    created goes."""
    given, made = tmp_path / "given", tmp_path / "made"
    given.mkdir()
    for out in (given, made):
        assert outdir._created(out) == out and (out / outdir.LOCK).exists()
        outdir.release()
        outdir.discard_unstarted(out)
    assert given.is_dir() and not any(given.iterdir())
    assert not made.exists()
