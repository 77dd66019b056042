"""The `gdrelu` command: outputs, their schema, and one-line errors with exit code 2."""

import contextlib
import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import agreeing, disk_full, finished_cell
from scipy.stats import binomtest

from gdrelu import native
from gdrelu.cells import Cell
from gdrelu.cli import main
from gdrelu.engine import Status
from gdrelu.protocols import protocol

# The wider width first: a run interrupted after its first unit resumes width 4 alone,
# padded to width 8 as in the uninterrupted run (test_a_resume_pads_and_buckets_...).
# 4 cells of 10 runs in one batch at width 8, checked every 200 steps: the programs of
# tests/test_engine.py's `width8`, from the suite's compilation cache when it has them.
SMALL = ["--widths", "8,4", "--deltas", "0,0.1", "--runs", "10", "--check-every", "200",
         "--max-checks", "50", "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    assert main(["run", *SMALL, "--out", str(out)]) == 0
    return out


def test_run_writes_table_summary_and_figure(small_run):
    with open(small_run / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 10
    for column in ("run_id", "seed", "width", "delta", "status", "stop_step", "final_loss",
                   "max_kink"):  # fmt: skip
        assert column in rows[0]
    assert len({r["run_id"] for r in rows}) == len(rows)
    # docs/outputs.md: the cells in order (the spec's widths 8, 4; its Δ 0, 0.1), each
    # cell's runs by index
    cells = [(int(r["width"]), float(r["delta"]), int(r["index"])) for r in rows]
    assert cells == [(w, d, i) for w in (8, 4) for d in (0.0, 0.1) for i in range(10)]
    assert {r["status"] for r in rows} <= {"crossed", "stuck", "a_degenerate", "x_degenerate",
                                           "unfinished", "diverged"}  # fmt: skip
    summary = json.loads((small_run / "summary.json").read_text())
    assert summary["backend"].startswith("cpu") and summary["seconds"] > 0
    assert summary["peak_memory"]["host_peak_rss_bytes"] > 2**20
    assert len(summary["cells"]) == 4
    for cell in summary["cells"]:
        assert {"width", "delta", "optimizer", "runs", "status_counts", "p_stuck", "ci95"} <= set(
            cell
        )
        # each cell's counts are those of its own rows in runs.csv, its interval scipy's
        # exact one of those counts
        own = [r["status"] for r in rows if (int(r["width"]), float(r["delta"])) == (
            cell["width"], cell["delta"])]  # fmt: skip
        counted = {label: own.count(label) for label in cell["status_counts"]}
        assert cell["status_counts"] == counted and sum(counted.values()) == cell["runs"] == 10
        stuck = sum(own.count(k) for k in ("stuck", "a_degenerate", "x_degenerate"))
        assert cell["p_stuck"] == stuck / 10
        exact = binomtest(stuck, 10).proportion_ci(0.95, "exact")
        assert cell["ci95"] == pytest.approx([exact.low, exact.high], abs=1e-12)
    assert len({json.dumps(c["status_counts"]) for c in summary["cells"]}) > 1  # cells differ
    assert (small_run / "failure_probability.png").read_bytes()[:4] == b"\x89PNG"


def test_same_seed_same_table(small_run, tmp_path):
    """A run is reproducible from its spec and seed; the table does not depend on other cells."""
    out = tmp_path / "again"
    assert main(["run", "--widths", "8", *SMALL[2:], "--out", str(out)]) == 0
    with open(small_run / "runs.csv") as f:
        first = [r for r in csv.DictReader(f) if r["width"] == "8"]
    with open(out / "runs.csv") as f:
        second = list(csv.DictReader(f))
    assert first == second


def _refused_in_one_line(argv, out, capsys) -> str:
    """`main(argv)` exits with code 2, creates nothing at `out`, and says why in one line
    of stderr: that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert not out.exists()
    return err


_COMPILER = native.c_compiler()
needs_compiler = pytest.mark.skipif(not _COMPILER, reason="no C compiler for kernel 'native'")


@pytest.mark.parametrize(
    ("kernel", "flags"),
    [
        ("pallas", []),  # no Triton on a CPU
        ("triton", []),  # no such kernel
        # the C loop steps float64 runs, and multinomial minibatches of 2^k draws only
        pytest.param("native", ["--dtype", "float32"], marks=needs_compiler),
        pytest.param("native", ["--protocol", "sgd", "--batch-size", "5"], marks=needs_compiler),
        # the general path's C loop: float64, 1-D data, at most 63 points
        pytest.param("native", ["--optimizer", "adam", "--dtype", "float32"], marks=needs_compiler),
        pytest.param(
            "native",
            ["--optimizer", "adam", "--data", "star", "--step-size", "ntk"],
            marks=needs_compiler,
        ),
        pytest.param("native", ["--optimizer", "adam", "--data", "p-ex"], marks=needs_compiler),
        ("interpret", ["--protocol", "sgd"]),  # the Pallas kernel: full-batch GD
    ],
)
@pytest.mark.parametrize("source", ["variable", "flag"])
def test_bad_kernel_exits_2_and_writes_nothing(
    kernel, flags, source, tmp_path, capsys, monkeypatch
):
    """Refused in one line naming what set the kernel: $GDRELU_PROPAGATOR_KERNEL, or
    --kernel (which wins over it: here the variable holds a kernel that would run)."""
    out = tmp_path / "never"
    argv = ["run", "--widths", "4", "--runs", "2", *flags, "--out", str(out)]
    if source == "variable":
        monkeypatch.setenv("GDRELU_PROPAGATOR_KERNEL", kernel)
        err = _refused_in_one_line(argv, out, capsys)
        assert err.startswith("gdrelu: error: $GDRELU_PROPAGATOR_KERNEL: "), err
        return
    monkeypatch.setenv("GDRELU_PROPAGATOR_KERNEL", "xla")
    err = _refused_in_one_line([*argv, "--kernel", kernel], out, capsys)
    named = "argument --kernel: invalid choice" if kernel == "triton" else "--kernel: "
    assert err.startswith(f"gdrelu: error: {named}") and "$GDRELU" not in err, err


@pytest.mark.parametrize(
    ("command", "kernel", "refusal"),
    [
        # the Pallas kernel trains full-batch GD only: the first experiment could take it
        (["reproduce", "--only", "gd-figure,sgd"], "interpret", "kernel 'interpret' trains"),
        # the general path's C loop takes no epoch minibatches
        pytest.param(
            ["run", "--preset", "section10"],
            "native",
            "kernel 'native' trains",
            marks=needs_compiler,
        ),
    ],
)
def test_a_kernel_one_experiment_cannot_take_is_refused_before_any_starts(
    command, kernel, refusal, tmp_path, capsys
):
    """`reproduce` and the section10 preset check the kernel against every experiment
    they will train, before the directory is made."""
    out = tmp_path / "never"
    err = _refused_in_one_line([*command, "--kernel", kernel, "--out", str(out)], out, capsys)
    assert err.startswith(f"gdrelu: error: --kernel: {refusal}"), err


def test_the_kernel_flag_holds_for_its_command_only(tmp_path, monkeypatch, capsys):
    """--kernel is $GDRELU_PROPAGATOR_KERNEL for one command: it wins over the variable,
    the manifest records it, and the variable is as it was afterwards; a kernel that a
    spec cannot take is refused naming the flag. Nothing trains (Ctrl-C at the work)."""
    from gdrelu import runner
    from gdrelu.cli import options
    from gdrelu.engine.placement import KERNEL_VARIABLE

    monkeypatch.setattr(runner, "train_cells", _interrupt_at_once)
    monkeypatch.setattr(options, "check_fits", lambda specs, budget, **kw: budget)
    tiny = ["run", "--widths", "4", "--runs", "2", "--quiet"]
    for before in (None, "interpret"):
        if before is None:
            monkeypatch.delenv(KERNEL_VARIABLE, raising=False)
        else:
            monkeypatch.setenv(KERNEL_VARIABLE, before)
        out = tmp_path / f"after-{before}"
        assert main([*tiny, "--kernel", "xla", "--out", str(out)]) == 130
        assert json.loads((out / "manifest.json").read_text())["settings"] == {"kernels": "xla"}
        assert os.environ.get(KERNEL_VARIABLE) == before
    capsys.readouterr()
    out = tmp_path / "never"
    argv = [*tiny, "--protocol", "sgd", "--kernel", "interpret", "--out", str(out)]
    assert _refused_in_one_line(argv, out, capsys) == (
        "gdrelu: error: --kernel: kernel 'interpret' trains full-batch GD only, not 'sgd' "
        "with multinomial minibatches; use --kernel xla"
    )
    assert os.environ.get(KERNEL_VARIABLE) == "interpret"


DISTRIBUTED = ["--distributed", "--num-processes", "1", "--process-id", "0"]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--widths", "16,x"], "--widths"),
        (["--widths", "0"], "widths"),
        (["--runs", "-3"], "runs"),
        (["--dtype", "float16"], "dtype"),
        (["--deltas", "0,nan"], "deltas"),
        (["--check-every", "0"], "check_every"),
        (["--max-checks", "0"], "max_checks"),
        (["--seed", "-1"], "seed"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--optimizer", "lbfgs"], "optimizer"),
        (["--step-size", "fast"], "step_size"),
        (["--step-size", "nan"], "step_size: nan is not one of paper, ntk, small"),
        (["--step-size", "1e-400"], "step_size: '1e-400' is 0 in floating point"),  # "0.0 is"
        (["--out", ""], "--out: an empty path"),  # read as '.', refused as "not empty"
        (["--config", ""], "--config: an empty path"),
        # an empty item is a typo (a width left out), not a shorter list
        (["--widths", "16,,32"], "--widths: '16,,32' has an empty item"),
        (["--deltas", "0,"], "--deltas: '0,' has an empty item"),
        (["--optimizer", "gd", "--sampler", "epoch"], "sampler"),
        (["--batch-size", "0"], "batch_size"),
        (["--optimizer", "adam", "--batch-size", "4"], "--batch-size: adam trains full-batch"),
        # a protocol's field that a flag contradicts is named with the protocol
        (
            ["--protocol", "sgd", "--optimizer", "gd"],
            "sampler: 'gd' is full-batch; use optimizer='sgd' for minibatches (sampler is set "
            "by --protocol sgd)",
        ),
        (["--num-heldout", "1024"], "--num-heldout: only continuous data"),  # the default
        (["--protocol", "fast"], "--protocol"),
        (["--scale", "small"], "--scale"),
        (["--memory-budget", "-1"], "--memory-budget"),
        (["--memory-budget", "1e-300"], "--memory-budget"),
        (["--memory-budget", "1e300"], "--memory-budget"),
        (["--check-every", "1000", "--max-checks", "3000000"], "max_checks"),
        (["--preset", "section10", "--seed", "-1"], "seed"),
        (["--runs", "10", "--max-runs", "50"], "max_runs: bounds"),  # no growth asked for
        (["--num-processes", "2"], "--num-processes: needs --distributed"),
        (["--coordinator-timeout", "5"], "--coordinator-timeout: needs --distributed"),
        ([*DISTRIBUTED, "--coordinator-timeout", "0"], "--coordinator-timeout: 0 is not"),
        (["--resume", "nowhere"], "--resume: give the run's directory there, not with --out"),
        ([*DISTRIBUTED, "--coordinator", "host0"], "--coordinator: 'host0' is not host:port"),
        (
            [*DISTRIBUTED, "--coordinator", "h:99999"],
            "--coordinator: 'h:99999' is not host:port (port 1-65535)",
        ),
        # the protocol set the batch size that the sampler leaves unused
        (
            ["--protocol", "sgd", "--sampler", "full"],
            "batch_size: sgd trains full-batch (sampler 'full') (batch_size is set by --protocol "
            "sgd)",
        ),
    ],
)
def test_bad_values_exit_2_with_one_line_and_write_nothing(args, field, tmp_path, capsys):
    out = tmp_path / "never"
    err = _refused_in_one_line(["run", *args, "--out", str(out)], out, capsys)
    # the field (or the whole reason) first: a refusal for another flag does not pass
    assert err.startswith((f"gdrelu: error: {field}", f"gdrelu: error: argument {field}")), err


def test_a_resume_of_a_missing_directory_is_refused_by_name(tmp_path, capsys):
    path = tmp_path / "nowhere"
    err = _refused_in_one_line(["run", "--resume", str(path)], path, capsys)
    assert err == f"gdrelu: error: --resume: {path} is not a directory"


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (b"widths = [4]\nruns = 0\n", "runs"),
        (b"widths = [4]\nrunz = 3\n", "runz"),
        (b"widths = [4\n", "--config"),
        (b"widths = [4]\n\xff\xfe\n", "--config"),
        (b"stop_on = [[1]]\n", "stop_on"),
        (b"widths = [9223372036854775807]\nnum_samples = 100\n", "2^40"),
        # a value that changes nothing is refused as named in the file
        (b'optimizer = "adam"\nbatch_size = 4\n', "error: batch_size: adam trains full-batch"),
        # only --num-heldout was refused once; the config file's equal value passed
        (b"num_heldout = 1024\n", "error: num_heldout: only continuous data"),
    ],
)
def test_a_config_file_that_is_not_a_spec_exits_2(config, field, tmp_path, capsys):
    path, out = tmp_path / "exp.toml", tmp_path / "never"
    path.write_bytes(config)
    err = _refused_in_one_line(["run", "--config", str(path), "--out", str(out)], out, capsys)
    assert field in err, err


def test_a_cache_dir_that_is_a_file_exits_2(tmp_path, capsys):
    """JAX only warns at every program when its cache directory is a file."""
    (tmp_path / "a_file").write_text("")
    out = tmp_path / "never"
    argv = ["run", "--widths", "4", "--runs", "2", "--cache-dir", str(tmp_path / "a_file")]
    err = _refused_in_one_line([*argv, "--out", str(out)], out, capsys)
    assert "--cache-dir: " in err and "not a directory" in err, err


def test_a_cache_dir_that_cannot_be_made_exits_2_and_the_default_is_left_off(
    tmp_path, capsys, monkeypatch
):
    """A --cache-dir under a file ran on, JAX warning into the progress bar at every
    program that it could not write there. The default, which no flag chose (a read-only
    home), is left off with one warning, and the run goes on."""
    from gdrelu.cli import backends

    (tmp_path / "a_file").write_text("")
    out, under = tmp_path / "never", tmp_path / "a_file" / "xla"
    argv = ["run", "--widths", "4", "--runs", "2", "--cache-dir", str(under), "--out", str(out)]
    err = _refused_in_one_line(argv, out, capsys)
    assert err == (f"gdrelu: error: --cache-dir: {under} cannot be made: {tmp_path}/a_file is "
                   "a file, not a directory; 'none' turns it off")  # fmt: skip
    monkeypatch.delenv("GDRELU_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(under))
    default = backends.cache.default_cache_dir()
    assert backends._usable_cache_dir(default) == "none"
    assert capsys.readouterr().err == (f"gdrelu: warning: no compilation cache ({default} cannot "
                                       f"be made: {tmp_path}/a_file is a file, not a directory); "
                                       "--cache-dir DIR keeps one\n")  # fmt: skip
    assert backends._usable_cache_dir(tmp_path / "new" / "xla") == tmp_path / "new" / "xla"
    monkeypatch.setattr(backends.os, "access", lambda *args: False)  # as a non-root user's
    assert backends._usable_cache_dir(tmp_path) == tmp_path  # shared read-only: JAX reads it
    assert capsys.readouterr().err == (f"gdrelu: warning: {tmp_path} is not writable: its "
                                       "programs are read, none added\n")  # fmt: skip
    with pytest.raises(backends.UsageError, match=r"cannot be made: .* is not writable; 'none'"):
        backends._usable_cache_dir(tmp_path / "new")


def test_a_cache_variable_that_names_a_file_is_named(tmp_path, capsys, monkeypatch):
    """The refusal named --cache-dir, a flag the command line never gave."""
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("GDRELU_CACHE_DIR", str(tmp_path / "a_file"))
    out = tmp_path / "never"
    err = _refused_in_one_line(["run", "--widths", "4", "--runs", "2", "--out", str(out)], out,
                               capsys)  # fmt: skip
    assert err.endswith(f"$GDRELU_CACHE_DIR: {tmp_path}/a_file is a file, not a directory; 'none' "
                        "turns it off"), err  # fmt: skip


def test_unwritable_output_is_reported_before_compute(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["run", "--widths", "4", "--out", str(blocker / "sub")]) == 2
    assert "--out" in capsys.readouterr().err


def test_existing_results_are_not_overwritten(small_run, capsys):
    assert main(["run", *SMALL, "--out", str(small_run)]) == 2
    assert "already holds results" in capsys.readouterr().err


def _started_copy(small_run, directory):
    """`small_run`'s manifest and units without its results: a run killed at its end."""
    import shutil

    (directory / "units").mkdir(parents=True)
    shutil.copy(small_run / "manifest.json", directory)
    for unit in (small_run / "units").iterdir():
        shutil.copy(unit, directory / "units")
    return directory


def test_units_without_a_manifest_are_no_run_to_resume(small_run, tmp_path, capsys):
    """A directory holding units/ but no manifest was not started by gdrelu (it writes the
    manifest first): it is refused as not empty, without a --resume hint that would fail."""
    started = _started_copy(small_run, tmp_path / "started")
    (started / "manifest.json").unlink()
    assert main(["run", *SMALL, "--out", str(started)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not empty (units)" in err, err
    assert main(["run", "--resume", str(started), "--quiet"]) == 2  # what the hint said
    capsys.readouterr()


def test_files_a_killed_writer_left_are_swept(small_run, tmp_path, capsys):
    """A process killed inside `atomic.write_bytes` leaves .NAME.PID.tmp: a run killed
    while it wrote its manifest left a directory that --out refused as not empty and
    --resume as no gdrelu run, and a resume kept such files of its units. Each is now
    said, or removed once the directory is held (every writer holds it: any such file
    then is a dead one's); a file of that form that gdrelu never writes stays."""
    from gdrelu.cli import outdir

    dead = 4_000_000  # above any pid: a number too large for os.kill crashed an earlier check
    out = tmp_path / "killed"
    out.mkdir()
    (out / f".manifest.json.{dead}.tmp").write_bytes(b'{"specs": [')
    assert main(["run", "--resume", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"gdrelu: error: --resume: {out} holds only the manifest.json its run was "
                   f"writing when it stopped (.manifest.json.{dead}.tmp): nothing was trained; "
                   "start the run again there with --out"), err  # fmt: skip
    (out / ".thesis.tex.12.tmp").write_bytes(b"mine")
    with pytest.raises(outdir.UsageError, match=r"is not empty \(.thesis.tex.12.tmp\)"):
        outdir._created(out)
    assert (out / ".thesis.tex.12.tmp").read_bytes() == b"mine"
    (out / ".thesis.tex.12.tmp").unlink()
    try:
        assert outdir._created(out) == out and sorted(p.name for p in out.iterdir()) == [".lock"]
    finally:
        outdir.release()
    started = _started_copy(small_run, tmp_path / "started")
    (started / "units" / f".gd-w4.npz.{dead}.tmp").write_bytes(b"PK")
    assert main(["run", "--resume", str(started), "--quiet"]) == 0
    assert not list(started.rglob("*.tmp")) and (started / "summary.json").exists()
    capsys.readouterr()


def test_a_new_run_does_not_take_the_units_of_a_started_one(small_run, tmp_path, capsys):
    """A started run's units were trained with its spec: another spec (here seed 7) must
    not read them as its own, so --out refuses the directory and leaves it as it was."""
    started = _started_copy(small_run, tmp_path / "started")
    before = {p.name: p.read_bytes() for p in started.rglob("*") if p.is_file()}
    assert main(["run", *SMALL, "--seed", "7", "--out", str(started)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--resume {started}" in err, err
    assert {p.name: p.read_bytes() for p in started.rglob("*") if p.is_file()} == before


def test_an_unreadable_unit_is_named_on_resume(small_run, tmp_path, capsys):
    started = _started_copy(small_run, tmp_path / "started")
    unit = sorted((started / "units").iterdir())[0]
    unit.write_bytes(unit.read_bytes()[:100])
    assert main(["run", *SMALL, "--resume", str(started)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and unit.name in err and "delete it" in err, err
    assert not (started / "runs.csv").exists()


@pytest.mark.parametrize(
    ("manifest", "field"),
    [
        ([1], "records no spec"),
        ({"specs": [{"reproduce": ["gd"], "scale": "small"}]}, "reproduce --resume"),
    ],
)
def test_a_directory_another_command_started_is_not_resumed(manifest, field, tmp_path, capsys):
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert main(["run", "--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and field in err, err


def test_compare_pairs_the_runs_of_every_optimizer(tmp_path):
    """Cells carry the optimizer; each comparison's discordant counts and difference are
    those of the per-run table paired by run id (a seed gives every optimizer the same
    data and initial networks)."""
    out = tmp_path / "cmp"
    # GD: tests/test_engine.py's `width8` runs and checks (programs from the suite's cache)
    args = ["--widths", "8", "--deltas", "0", "--runs", "40", "--check-every", "200",
            "--max-checks", "3", "--quiet"]  # fmt: skip
    assert main(["compare", "--optimizers", "gd,adam", *args, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["optimizers"] == ["gd", "adam"]
    assert [s["optimizer"] for s in summary["specs"]] == ["gd", "adam"]  # each its stop rules
    assert [c["optimizer"] for c in summary["cells"]] == ["gd", "adam"]
    assert all(c["stuck_rule"] == "final" for c in summary["cells"])
    with open(out / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    stuck = {}
    for r in rows:
        final_stuck = r["escaped"] == "False" and r["status"] != "diverged"
        certified = r["status"] in ("stuck", "a_degenerate", "x_degenerate")
        stuck[r["optimizer"], r["run_id"]] = certified or final_stuck
    ids = sorted({r["run_id"] for r in rows})
    assert len(ids) == 40 and len(rows) == 80
    b = sum(stuck["gd", i] and not stuck["adam", i] for i in ids)
    c = sum(stuck["adam", i] and not stuck["gd", i] for i in ids)
    (comparison,) = summary["comparisons"]
    assert {"a", "b", "width", "delta", "difference", "ci95", "p_value"} <= set(comparison)
    assert (comparison["a"], comparison["b"]) == ("gd", "adam")
    assert comparison["discordant"] == [b, c]
    assert comparison["difference"] == pytest.approx((b - c) / 40)
    # McNemar's exact test by hand: twice the smaller tail of Binomial(b + c, 1/2)
    tail = sum(math.comb(b + c, k) for k in range(min(b, c) + 1)) / 2 ** (b + c)
    assert comparison["p_value"] == pytest.approx(min(1.0, 2 * tail), rel=1e-12)
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    table = (out / "runs.csv").read_text()
    assert main(["compare", "--resume", str(out), "--quiet"]) == 0  # its optimizers: recorded
    assert (out / "runs.csv").read_text() == table


@pytest.mark.parametrize(
    ("argv", "stops_early"),
    [
        (["compare", "--optimizers", "gd,sgd,momentum,adam"], [False] * 4),
        (["compare", "--optimizers", "gd,sgd", "--early-stopping", "on"], [True, True]),
        (["compare", "--optimizers", "gd,sgd", "--config", "on.toml"], [True, True]),
        (["run"], [False]),
        (["run", "--early-stopping", "on"], [True]),
        (["run", "--protocol", "sgd"], [True]),
        (["run", "--protocol", "sgd", "--early-stopping", "off"], [False]),
        (
            ["compare", "--optimizers", "gd,sgd", "--data", "star", "--step-size", "ntk"],
            [False] * 2,
        ),
        (
            ["compare", "--optimizers", "gd,sgd", "--init", "ntk", "--step-size", "ntk"],
            [False] * 2,
        ),
    ],
)
def test_early_stopping_is_asked_for(argv, stops_early, tmp_path, monkeypatch):
    """Early stopping stops every optimizer's runs of a `compare` when asked for (the flag
    or a config file), and a `run`'s with the flag or a protocol that has it."""
    from gdrelu.cli.options import requested_specs
    from gdrelu.cli.parser import parser

    monkeypatch.chdir(tmp_path)
    (tmp_path / "on.toml").write_text("early_stopping = true\n")
    specs = requested_specs(parser().parse_args(argv))
    assert [s.early_stopping for s in specs] == stops_early
    if argv[0] == "compare":  # and GD's certificate stops it where it is a proof (not d-dim, NTK)
        certificate = () if "ntk" in argv else ("stuck", "degenerate")
        assert [s.stop_on for s in specs] == [certificate] + [()] * (len(specs) - 1)
        # P(stuck) reads the final network for every optimizer (docs/theory.md)
        assert all(s.stuck_rule == "final" and s.final_stuck_rule for s in specs)


@pytest.mark.parametrize(
    ("optimizers", "field"),
    [
        ("gd", "--optimizers"),
        ("", "--optimizers: needed, two or more of"),  # required, but not with --resume
        ("gd,foo", "--optimizers: 'foo' is not one of gd, sgd, momentum, adam"),
        ("gd,sgd --optimizer adam", "unrecognized arguments: --optimizer adam"),
    ],
)
def test_bad_compare_exits_2(optimizers, field, tmp_path, capsys):
    out = tmp_path / "never"
    given = ["--optimizers", *optimizers.split()] if optimizers else []
    argv = ["compare", *given, "--out", str(out)]
    err = _refused_in_one_line(argv, out, capsys)
    assert field in err, err


@pytest.mark.parametrize(
    "setting", ['stop_on = ["crossed"]', 'stuck_rule = "certificate"', 'optimizer = "adam"']
)
def test_compare_refuses_a_config_field_it_sets_itself(setting, tmp_path, capsys):
    """compare sets each optimizer's stopping and stuck rules (and the optimizer): a
    config file's value for one of them would be dropped, so it is refused instead."""
    config, out = tmp_path / "exp.toml", tmp_path / "never"
    config.write_text(setting + "\n")
    small = ["--widths", "8", "--deltas", "0", "--runs", "2", "--max-checks", "1"]
    argv = ["compare", "--optimizers", "gd,sgd", "--config", str(config), "--out", str(out)]
    err = _refused_in_one_line(argv + small, out, capsys)
    assert f"error: {setting.split()[0]}:" in err, err


@pytest.mark.slow  # three processes; the Ctrl-C test below covers resuming in the suite
def test_a_killed_run_resumes_to_the_uninterrupted_table(tmp_path, capsys):
    """SIGKILL at a random moment after the first unit is stored, then --resume: the
    per-run table equals that of an uninterrupted run (no run lost or duplicated); a
    resume with other settings is refused, naming the field."""
    import random
    import signal
    import subprocess
    import sys
    import time

    # pow2 buckets: each width compiles its own programs, so the run goes on for seconds
    # after its first unit (with auto buckets the widths share them, and the run could end
    # before the kill); the Ctrl-C test below resumes auto buckets
    command = [sys.executable, "-m", "gdrelu.cli", "run", "--widths", "4,6,8", "--deltas",
               "0,0.1", "--runs", "10", "--check-every", "100", "--max-checks", "20",
               "--buckets", "pow2", "--quiet"]  # fmt: skip
    whole = tmp_path / "whole"
    subprocess.run([*command, "--out", str(whole)], check=True, capture_output=True)
    part = tmp_path / "part"
    proc = subprocess.Popen([*command, "--out", str(part)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while not list((part / "units").glob("*.npz")) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 0.2))
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before the kill: nothing tested"
    assert not (part / "runs.csv").exists()
    assert main(["run", *command[4:], "--resume", str(part)]) == 0
    assert (part / "runs.csv").read_text() == (whole / "runs.csv").read_text()
    capsys.readouterr()
    assert main(["run", *command[4:6], "--runs", "11", "--resume", str(part)]) == 2
    err = capsys.readouterr().err
    assert "another spec (differs in runs: recorded 10, given 11)" in err, err


@pytest.mark.slow  # duplicated in kind by faster tests; runs with -m slow
def test_second_run_reads_the_compilation_cache(tmp_path, auto_kernel):
    """Two `gdrelu run` processes sharing --cache-dir: the first fills it, the second
    loads every program it runs from it (small ones too), and the C loop where it is the
    kernel, and writes the same runs."""
    import subprocess
    import sys

    cache = tmp_path / "cache"
    command = [sys.executable, "-m", "gdrelu.cli", "run", "--widths", "4", "--deltas", "0",
               "--runs", "10", "--check-every", "100", "--max-checks", "20", "--quiet",
               "--cache-dir", str(cache)]  # fmt: skip
    logs = []
    for name in ("first", "second"):
        env = {**os.environ, "JAX_LOG_COMPILES": "1"}
        proc = subprocess.run(
            [*command, "--out", str(tmp_path / name)], capture_output=True, text=True, env=env
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        logs.append(proc.stderr)
        if name == "first":
            assert any(cache.iterdir())
            built = list(cache.glob("gdrelu-native/propagator-*.so"))
            assert len(built) == (auto_kernel == "native")
            stamps = [(p, p.stat().st_mtime_ns) for p in built]
    assert [(p, p.stat().st_mtime_ns) for p in cache.glob("gdrelu-native/*")] == stamps
    first, second = ((tmp_path / n / "runs.csv").read_text() for n in ("first", "second"))
    assert first == second
    hits = logs[1].count("Persistent compilation cache hit")
    programs = logs[1].count("Finished XLA compilation")  # logged for hits too
    assert hits == programs == logs[0].count("Finished XLA compilation") > 0, logs[1][-2000:]


def test_ctrl_c_leaves_a_resumable_directory(small_run, tmp_path, monkeypatch, capsys):
    """KeyboardInterrupt after the first width: exit 130, one unit kept, and --resume
    finishes to the table of the uninterrupted run."""
    restore = _interrupted_after_first_unit(monkeypatch)
    out = tmp_path / "interrupted"
    assert main(["run", *SMALL, "--out", str(out)]) == 130
    assert "--resume" in capsys.readouterr().err
    assert len(list((out / "units").glob("*.npz"))) == 1 and not (out / "runs.csv").exists()
    (unit,) = (out / "units").glob("*.npz")
    with np.load(unit) as stored:
        arrays = {**stored, "seconds": np.float64(1000.0)}  # as if the first width took 1000 s
    np.savez(unit, **arrays)
    restore()
    import gdrelu.store

    saved = []
    save_unit = gdrelu.store.save_unit
    monkeypatch.setattr(
        gdrelu.store, "save_unit", lambda d, n, *a: saved.append(n) or save_unit(d, n, *a)
    )
    assert main(["run", *SMALL, "--resume", str(out)]) == 0
    assert saved == ["gd-w4"]  # width 8's unit is read back, not trained and stored again
    assert (out / "runs.csv").read_text() == (small_run / "runs.csv").read_text()
    seconds = json.loads((out / "summary.json").read_text())["seconds"]
    assert seconds > 1000  # the time before the resume counts (no bound on the resume's own)
    assert "(1000.0 s of it before the resume)" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    peak = summary["peak_memory"]["host_peak_rss_bytes"]
    summary["peak_memory"]["host_peak_rss_bytes"] = 2**50  # as if the first session had
    (out / "summary.json").write_text(json.dumps(summary))
    assert main(["run", *SMALL, "--resume", str(out)]) == 0  # finished: nothing left to train
    assert saved == ["gd-w4"]
    assert ", all trained before the resume, on " in capsys.readouterr().out
    # the summary kept the sessions' peak and time: this one's were written over them
    again = json.loads((out / "summary.json").read_text())
    assert again["peak_memory"]["host_peak_rss_bytes"] == 2**50 > peak
    assert again["seconds"] == summary["seconds"]


@pytest.mark.slow  # tests/test_store.py resumes from finished batches in the suite
def test_ctrl_c_between_batches_keeps_the_finished_batches(tmp_path, monkeypatch, capsys):
    """A bucket trained in several batches (a small --memory-budget) keeps each batch it
    finished when Ctrl-C comes before the bucket's unit; --resume trains the other runs
    only and writes every run's row once (that they equal the uninterrupted run's:
    tests/test_store.py)."""
    import gdrelu.store

    argv = ["run", "--widths", "8", "--deltas", "0,0.1", "--runs", "40", "--check-every",
            "200", "--max-checks", "2", "--memory-budget", "0.00025", "--quiet"]  # fmt: skip
    out = tmp_path / "interrupted"
    save_part, kept = gdrelu.store.save_part, []

    def interrupted_after_two(out_dir, pieces, seconds, units):
        save_part(out_dir, pieces, seconds, units)
        kept.append(sum(idx.size for _, idx in pieces))
        if len(kept) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(gdrelu.store, "save_part", interrupted_after_two)
    assert main([*argv, "--out", str(out)]) == 130
    assert len(list((out / "units" / "parts").glob("*.npz"))) == 2
    assert not list((out / "units").glob("*.npz")) and not (out / "runs.csv").exists()
    trained = []
    monkeypatch.setattr(gdrelu.store, "save_part", lambda d, p, s, u: trained.append(p))
    assert main([*argv, "--resume", str(out)]) == 0
    assert sum(idx.size for batch in trained for _, idx in batch) == 80 - sum(kept)
    with open(out / "runs.csv") as f:
        rows = [(r["delta"], int(r["index"])) for r in csv.DictReader(f)]
    assert rows == [(d, i) for d in ("0.0", "0.1") for i in range(40)]
    assert not (out / "units" / "parts").exists()


def _interrupt_at_once(*args, **kwargs):
    """A stub of the work: Ctrl-C before it starts."""
    raise KeyboardInterrupt


# (argv, the work to stub, the command whose --resume finishes the directory) of the
# commands other than a plain `gdrelu run`
OTHER_COMMANDS = [
    (["reproduce", "--only", "sgd"], "gdrelu.reproduce.reproduce", "gdrelu reproduce"),
    (["run", "--preset", "section10"], "gdrelu.section10.run_group", "gdrelu run"),
]


@pytest.mark.parametrize(("command", "interrupted", "finish"), OTHER_COMMANDS)
def test_ctrl_c_names_the_command_that_finishes_it(
    command, interrupted, finish, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(interrupted, _interrupt_at_once)
    out = tmp_path / "out"
    assert main([*command, "--out", str(out), "--quiet"]) == 130
    err = capsys.readouterr().err.strip()
    assert err == f"gdrelu: interrupted; finish with: {finish} --resume {out}", err


@pytest.mark.parametrize(
    ("command", "writer"),
    [
        (["run"], "gdrelu.cli.run._report"),
        (["run", "--preset", "section10"], "gdrelu.store.write_section10"),
    ],
)
def test_ctrl_c_while_the_results_are_written_names_the_resume(
    command, writer, tmp_path, monkeypatch, capsys
):
    """Ctrl-C after the last run, while the table, figure and summary were written, said
    only "gdrelu: interrupted" and left a directory without its figure; a resume writes
    them again, and the line now says so. Nothing trains here (stubs)."""
    monkeypatch.setattr("gdrelu.cli.run._train", lambda *args, **kwargs: [])
    monkeypatch.setattr("gdrelu.section10.run_group", lambda *args, **kwargs: [])
    monkeypatch.setattr("gdrelu.section10.best_step_sizes", lambda rows: {})
    monkeypatch.setattr("gdrelu.section10.summary", lambda *args, **kwargs: {})
    monkeypatch.setattr("gdrelu.section10.format_table", lambda best: "")
    monkeypatch.setattr("gdrelu.cli.options.check_fits", lambda specs, budget, **kw: budget)
    monkeypatch.setattr(writer, _interrupt_at_once)
    out = tmp_path / "out"
    assert main([*command, "--out", str(out), "--quiet"]) == 130
    err = capsys.readouterr().err.strip()
    assert err == f"gdrelu: interrupted; finish with: gdrelu run --resume {out}", err


def test_ctrl_c_while_the_command_starts_is_one_line(monkeypatch, capsys):
    """Ctrl-C while the parser was built (it imports JAX and matplotlib: seconds) printed a
    traceback; now one line, exit 130."""
    monkeypatch.setattr("gdrelu.cli.parser.parser", _interrupt_at_once)
    assert main(["run"]) == 130
    assert capsys.readouterr().err == "gdrelu: interrupted\n"


@pytest.mark.parametrize("module", ["gdrelu", "gdrelu.cli"])
def test_python_m_runs_the_command(module, monkeypatch, capsys):
    """`python -m gdrelu` said that gdrelu cannot be executed; both modules are the
    command."""
    import runpy
    import sys

    monkeypatch.setattr(sys, "argv", [module, "--help"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    assert stop.value.code == 0
    assert "{run,compare,reproduce}" in capsys.readouterr().out


def test_an_ignored_sigint_stays_ignored():
    """A shell starts `gdrelu run &` with SIGINT ignored; the command no longer takes it
    back (a Ctrl-C meant for the shell's foreground job stopped the background run), but
    takes SIGTERM (it returned before, and a `kill` ended the run with no hint)."""
    import signal

    from gdrelu.cli import interrupt

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    term = signal.getsignal(signal.SIGTERM)
    try:
        installed = interrupt.install()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        # SIGTERM (a `kill` of the background run) is still taken: its hint is printed
        assert signal.getsignal(signal.SIGTERM) is interrupt._on_signal
        interrupt.restore(installed)
        assert signal.getsignal(signal.SIGTERM) is term
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, term)


def test_the_command_handles_ctrl_c_before_jax_loads(tmp_path, monkeypatch, capsys):
    """`gdrelu` imported `gdrelu/__init__`, and JAX with it (over a second), before
    `main` could handle Ctrl-C: a traceback, or a Ctrl-C that a callback dropped and the
    run went on to its end. The package now imports its names on first use, and a Ctrl-C
    dropped while JAX loads ends the command before it writes anything."""
    import subprocess
    import sys

    from gdrelu.cli import interrupt

    code = "import sys, gdrelu.cli; print('jax' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"  # fmt: skip
    install = interrupt.install

    def dropped_while_loading():
        previous = install()
        interrupt._pending.set()  # as a gc callback swallows its KeyboardInterrupt
        return previous

    monkeypatch.setattr(interrupt, "install", dropped_while_loading)
    out = tmp_path / "never"
    assert main(["run", "--widths", "4", "--runs", "2", "--out", str(out)]) == 130
    assert capsys.readouterr().err == "gdrelu: interrupted\n" and not out.exists()


def test_a_dropped_ctrl_c_prints_no_traceback(monkeypatch):
    """A KeyboardInterrupt raised in a gc callback printed "Exception ignored in ..." and
    its traceback before the one-line message; while the handler is installed and the
    interrupt pending, such an exception is quiet, and any other reaches the hook that
    was there before."""
    import signal
    import sys

    from gdrelu.cli import interrupt

    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)

    class Dropped:
        def __init__(self, exc_type):
            self.exc_type = exc_type

    previous = interrupt.install()
    try:
        sys.unraisablehook(Dropped(KeyboardInterrupt))  # not pending: reported
        with contextlib.suppress(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        sys.unraisablehook(Dropped(KeyboardInterrupt))  # pending: quiet
        sys.unraisablehook(Dropped(ValueError))
    finally:
        interrupt.restore(previous)
    assert [r.exc_type for r in reported] == [KeyboardInterrupt, ValueError]
    assert sys.unraisablehook == reported.append


@pytest.mark.parametrize(("command", "stopped", "finish"), OTHER_COMMANDS)
def test_a_full_disk_names_the_command_that_finishes_it(
    command, stopped, finish, tmp_path, monkeypatch, capsys
):
    """A storage error once the manifest is written: exit 1, one line whose hint is the
    command that started the directory (a reproduction is not finished by `gdrelu run`),
    with the kernel it was started with. Nothing trains: no memory estimate, XLA's kernel
    (no C build)."""

    from gdrelu.cli import options
    from gdrelu.engine.placement import KERNEL_VARIABLE

    monkeypatch.setattr(stopped, disk_full)
    monkeypatch.setattr(options, "check_fits", lambda specs, budget, **kw: budget)
    monkeypatch.setenv(KERNEL_VARIABLE, "xla")
    out = tmp_path / "out"
    assert main([*command, "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    finished = f"{finish} --resume {out} --kernel xla"
    assert err == f"gdrelu: error: No space left on device; finish with: {finished}"


def test_a_full_disk_is_reported_before_compute(tmp_path, capsys, monkeypatch):
    import collections
    import shutil

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 4096, 4096))
    out = tmp_path / "never"
    err = _refused_in_one_line(["run", *SMALL, "--out", str(out)], out, capsys)
    assert "--out" in err and "free" in err, err


def test_an_out_that_is_a_file_or_unwritable_is_named_as_such(tmp_path, capsys):
    """--out naming a file said "cannot write to it: File exists", and --out under /proc
    "needs about 1 MiB, 0 MiB free": the space was checked before whether the place can
    hold a directory at all. A full disk stays refused (above), after the place."""
    file = tmp_path / "afile"
    file.write_text("mine")
    assert main(["run", *SMALL, "--out", str(file)]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"gdrelu: error: --out: {file} is a file, not a directory"
    )
    assert file.read_text() == "mine"
    if Path("/proc/self").is_dir():  # Linux: no directory can be made under /proc
        out = Path("/proc/gdrelu-test-out")
        err = _refused_in_one_line(["run", *SMALL, "--out", str(out)], out, capsys)
        assert "cannot" in err and "MiB" not in err, err


@pytest.mark.slow  # two processes, each compiling every program
def test_two_processes_give_the_runs_of_one(small_run, tmp_path):
    """--distributed with two local processes (gloo CPU collectives): each trains half of
    every cell, process 0 gathers and writes the same table as one process."""
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "distributed"
    common = [sys.executable, "-m", "gdrelu.cli", "run", *SMALL, "--distributed",
              "--coordinator", f"localhost:{port}", "--num-processes", "2"]  # fmt: skip
    procs = [
        subprocess.Popen(
            [*common, "--process-id", str(i), *(["--out", str(out)] if i == 0 else [])],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    errs = []
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]
        errs.append(err.decode())
    assert (out / "runs.csv").read_text() == (small_run / "runs.csv").read_text()
    # a dead peer aborts the others in C++: process 0 says beforehand how to finish
    assert f"`gdrelu run --resume {out}` (one process" in errs[0], errs[0][-2000:]
    assert "--resume" not in errs[1]


def _as_process(monkeypatch, index, gather=None, run_experiment=_interrupt_at_once):
    """Stub jax.distributed so that `main` runs as --distributed process `index` of 2,
    whose gathers return `gather(local)` (by default both processes' values equal this
    one's), training with `run_experiment` (by default interrupted at once): the flags of
    that process."""
    import gdrelu.runner
    from gdrelu.cli import backends
    from gdrelu.runner import Processes

    if gather is None:
        gather = lambda local: np.stack([local, local])  # noqa: E731

    def answered(local):
        if isinstance(local, np.ndarray) and local.dtype == np.uint8 and local.ndim == 2:
            return np.stack([local, local])  # `check_same_experiment`: the same everywhere
        return gather(local)

    processes = Processes(index, 2, answered)
    monkeypatch.setattr(backends, "start_processes", lambda args, specs: processes)
    monkeypatch.setattr(gdrelu.runner, "run_experiment", run_experiment)
    return ["--distributed", "--num-processes", "2", "--process-id", str(index)]


def test_a_distributed_run_is_refused_with_resume_or_target_halfwidth(small_run, tmp_path, capsys):
    """docs/design.md: --distributed is not yet combined with --resume or --target-halfwidth;
    each is refused in one line (exit 2) before jax.distributed starts, writing nothing."""
    out = tmp_path / "never"
    grown = [*DISTRIBUTED, "--runs", "10", "--target-halfwidth", "0.1", "--max-runs", "100"]
    err = _refused_in_one_line(["run", *grown, "--out", str(out)], out, capsys)
    assert "--distributed: not with --target-halfwidth" in err, err
    before = sorted(p.name for p in small_run.rglob("*"))
    assert main(["run", "--resume", str(small_run), *DISTRIBUTED]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--distributed: not with --resume" in err, err
    assert sorted(p.name for p in small_run.rglob("*")) == before


def test_processes_need_a_coordinator_at_host_port_and_a_run_each(monkeypatch):
    """`start_processes` (jax.distributed stubbed, 3 processes): a --coordinator that is not
    host:port with a numeric port is refused before jax.distributed starts; a spec with as
    many runs per cell as processes is taken (fewer are refused by `check_same_experiment`)."""
    import argparse

    import jax

    from gdrelu.cli import backends
    from gdrelu.cli.errors import UsageError
    from gdrelu.spec import ExperimentSpec

    started, waited = [], []
    monkeypatch.setattr(
        jax.distributed, "initialize", lambda *args, **kw: started.append((*args, kw))
    )
    monkeypatch.setattr(backends, "_wait_for_coordinator", lambda *args: waited.append(args))
    monkeypatch.setattr(jax, "process_count", lambda: 3)
    monkeypatch.setattr(jax, "process_index", lambda: 2)
    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=3)

    def args(coordinator, timeout=None):
        return argparse.Namespace(resume=None, coordinator=coordinator, num_processes=3,
                                  process_id=2, coordinator_timeout=timeout)  # fmt: skip

    collectives = jax.config.jax_cpu_collectives_implementation
    try:
        for bad in ("host0:port", "host0:", ":12355", "host0", "host0:0", "host0:65536"):
            with pytest.raises(UsageError, match=rf"^--coordinator: '{bad}' is not host:port \("):
                backends.start_processes(args(bad), [spec])
        assert started == [] and waited == []
        processes = backends.start_processes(args("host0:12355"), [spec])
        assert (processes.index, processes.count) == (2, 3)
        assert started == [("host0:12355", 3, 2, {"initialization_timeout": 300})]
        assert waited == [("host0", 12355, 300)]  # process 2 waits for process 0's
        backends.start_processes(args("host0:12355", timeout=7), [spec])
        assert started[-1][-1] == {"initialization_timeout": 7} and waited[-1][-1] == 7
    finally:
        jax.config.update("jax_cpu_collectives_implementation", collectives)


@pytest.mark.parametrize(("given", "count"), [(5, "2"), (2, "2"), (-1, "2"), (-1, None)])
def test_a_process_id_outside_the_count_is_refused_before_any_wait(given, count, tmp_path, capsys):
    """--process-id 5 of 2 waited for the coordinator (5 minutes by default), then blamed
    it; -1 was taken for a process other than 0 too."""
    out = tmp_path / "never"
    processes = ["--num-processes", count] if count else []
    argv = ["run", "--widths", "4", "--runs", "2", "--out", str(out), "--distributed",
            "--coordinator", "localhost:1", *processes, "--process-id", str(given),
            "--coordinator-timeout", "30"]  # fmt: skip
    err = _refused_in_one_line(argv, out, capsys)
    assert err == f"gdrelu: error: --process-id: {given} is not in [0, {count or 'the count'})"


def test_a_process_count_below_one_is_refused_by_name(tmp_path, capsys):
    """--num-processes 0 was blamed on --process-id ("0 is not in [0, the count)")."""
    out = tmp_path / "never"
    argv = ["run", "--widths", "4", "--runs", "2", "--out", str(out), "--distributed",
            "--coordinator", "localhost:1", "--num-processes", "0"]  # fmt: skip
    err = _refused_in_one_line(argv, out, capsys)
    assert err == "gdrelu: error: --num-processes: 0 is not a count ≥ 1"


def test_a_process_whose_coordinator_does_not_answer_is_refused_in_time(tmp_path, capsys):
    """Process 1 of 2 with nothing listening at --coordinator: one line naming the flag
    and the address after --coordinator-timeout, before jax.distributed (which would wait
    and abort in C++), and nothing written. With a listener there it goes on at once."""
    import socket
    import time

    from gdrelu.cli import backends

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    start = time.monotonic()
    backends._wait_for_coordinator("127.0.0.1", port, 30)
    assert time.monotonic() - start < 10
    if socket.has_ipv6:  # gRPC's [::1]: the brackets are no part of the host
        with contextlib.suppress(OSError):
            six = socket.create_server(("::1", 0), family=socket.AF_INET6)
            backends._wait_for_coordinator("[::1]", six.getsockname()[1], 30)
            six.close()
    with pytest.raises(backends.UsageError, match=r"^--coordinator: 'no-such-host\.invalid' is "):
        backends._wait_for_coordinator("no-such-host.invalid", port, 30)  # at once, no wait
    assert time.monotonic() - start < 20
    listener.close()  # now nothing answers there
    out = tmp_path / "never"
    argv = ["run", *SMALL, "--distributed", "--coordinator", f"127.0.0.1:{port}",
            "--num-processes", "2", "--process-id", "1", "--coordinator-timeout", "1"]  # fmt: skip
    start = time.monotonic()
    err = _refused_in_one_line([*argv, "--out", str(out)], out, capsys)
    assert time.monotonic() - start >= 1
    assert err.startswith(f"gdrelu: error: --coordinator: nothing answered at 127.0.0.1:{port}")
    assert "in 1 s" in err and "start process 0 there first" in err, err


def test_what_c_prints_on_stdout_while_gloo_connects_goes_to_stderr(capfd):
    """Gloo's "[Gloo] Rank 0 is connected to 1 peer ranks" went to the standard output
    before process 0's table: the first gather (where gloo connects) runs with file
    descriptor 1 pointed at 2, and the table's stdout is its own again after."""
    import os

    from gdrelu.cli import backends

    print("before")
    with backends.stdout_to_stderr():
        os.write(1, b"[Gloo] Rank 0 is connected\n")
    print("after")
    out, err = capfd.readouterr()
    assert out == "before\nafter\n" and err == "[Gloo] Rank 0 is connected\n"


def test_processes_given_other_experiments_are_refused_on_every_process(tmp_path):
    """Process 1 with --runs 59 where process 0 had 60 padded its share with its last run
    (run 59 of runs.csv was run 57's copy), and with --seed 1 mixed two seeds' runs under
    seed 0, without a word. Every process gathers a digest of each spec field and refuses
    alike, naming the processes and the fields that differ; a data file's path may differ
    where its contents do not, and --num-processes may be left to the cluster on one
    process where another gives the same count. Then fewer runs per cell than processes
    are refused."""
    import contextlib
    import dataclasses

    from gdrelu.cli import backends
    from gdrelu.cli.errors import UsageError
    from gdrelu.runner import Processes
    from gdrelu.spec import ExperimentSpec

    spec = ExperimentSpec(widths=(16,), deltas=(0.0,), runs=60)

    def sent(specs, num_processes):
        """What a process given `specs` sends to the gather (the function's own digest)."""
        seen = []

        def gather(local):
            seen.append(local)
            return np.stack([local] * 3)

        with contextlib.suppress(UsageError):  # fewer runs than processes: after the gather
            backends.check_same_experiment(specs, Processes(1, 3, gather), num_processes)
        return seen[0]

    def check(mine, theirs, num_processes=3, their_num_processes=3):
        """Process 0 given `mine`, processes 1 and 2 `theirs`: process 0's verdict."""
        other = sent(theirs, their_num_processes)
        stack = lambda local: np.stack([local, other, other])  # noqa: E731
        backends.check_same_experiment(mine, Processes(0, 3, stack), num_processes)

    check([spec], [spec])
    check([spec], [spec], their_num_processes=None)  # the cluster's count: 3 as well
    for changed, named in (({"runs": 59}, "runs"), ({"seed": 1}, "seed"),
                           ({"runs": 59, "deltas": (0.1,)}, "deltas, runs")):  # fmt: skip
        said = r"^--distributed: process 1, 2 was given another experiment than process 0 "
        with pytest.raises(UsageError, match=said + rf"\(it differs in {named}\); give every"):
            check([spec], [dataclasses.replace(spec, **changed)])
    compare = [spec, dataclasses.replace(spec, optimizer="adam", sampler="multinomial")]
    with pytest.raises(UsageError, match=r"\(it differs in the optimizers\); give"):
        check([spec], compare)  # not every field's list
    with pytest.raises(UsageError, match=r"\(it differs in optimizer, sampler\); give"):
        check(compare[::-1], compare)
    with pytest.raises(UsageError, match=r"\(it differs in --num-processes\)"):
        check([spec], [spec], their_num_processes=2)
    few = dataclasses.replace(spec, runs=2)
    with pytest.raises(UsageError, match=r"^--runs: fewer runs per cell than the 3 processes"):
        check([few], [few])
    text = "x,y\n-2,1\n-1,2\n1,0\n2,1\n"  # each host's copy of the data file
    for name, content in (("a.csv", text), ("b.csv", text), ("c.csv", text.replace(",2", ",5"))):
        (tmp_path / name).write_text(content)
    a, b, c = (dataclasses.replace(spec, data="file", data_file=str(tmp_path / name))
               for name in ("a.csv", "b.csv", "c.csv"))  # fmt: skip
    check([a], [b])  # the same points at another path
    with pytest.raises(UsageError, match=r"\(it differs in the data file's contents\); give"):
        check([a], [c])


def test_a_process_other_than_0_writes_nothing_and_exits_130_on_ctrl_c(tmp_path, monkeypatch,
                                                                          capsys):  # fmt: skip
    """--distributed process 1 of 2 (jax.distributed stubbed, training interrupted at once):
    it leaves the CPU device count alone (jax.distributed has started the backends),
    creates no run directory, and exits 130 without naming a directory to resume."""
    from gdrelu.cli import backends

    process_1 = _as_process(monkeypatch, 1)  # process 0 opened the directory
    every_core, prepare = [], backends.prepare
    monkeypatch.setattr(
        backends, "prepare", lambda **kw: every_core.append(kw["every_core"]) or prepare(**kw)
    )
    monkeypatch.chdir(tmp_path)  # where the default --out, runs/<time>, would go
    assert main(["run", *SMALL, *process_1]) == 130
    assert "--resume" not in capsys.readouterr().err
    assert every_core == [False] and list(tmp_path.iterdir()) == []


def test_leaving_at_once_skips_the_exit_handlers_and_keeps_the_output():
    """`leave_at_once` (after a lost peer): the exit code given, what was printed flushed,
    and no exit handler run (JAX's would wait for the dead process, then abort)."""
    import subprocess
    import sys

    code = ("import atexit, sys; from gdrelu.cli import leave_at_once; print('said'); "
            "atexit.register(lambda: print('handler ran')); leave_at_once(3)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (3, "said\n")


def test_leaving_at_once_removes_the_c_loops_build_directory():
    """The one exit handler of gdrelu's own, which removes the directory a process builds
    its C loops in (`native`), runs when leaving at once too: every finished command
    leaves so, and each would have left a directory in /tmp."""
    import subprocess
    import sys

    code = ("import gdrelu.native as n; from gdrelu.cli import leave_at_once; "
            "print(n._build_directory()); leave_at_once(0)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    built = Path(done.stdout.strip())
    assert built.name.startswith("gdrelu-native-") and not built.exists()


@pytest.mark.parametrize(
    ("code", "signum", "distributed"),
    [(0, "SIGINT", True), (2, "SIGINT", True), (0, "SIGTERM", True), (0, "SIGINT", False),
     (0, "SIGTERM", False)],
)  # fmt: skip
def test_a_signal_during_a_finished_commands_exit_ends_it_quietly_with_its_code(
    code, signum, distributed
):
    """`gdrelu run`'s table was printed, then Ctrl-C while an exit handler ran (JAX's clean
    up): a KeyboardInterrupt traceback and exit 130 for a finished run. With
    --distributed `command` leaves on such a signal with the command's own code, output
    flushed, no traceback; without, it runs no exit handler at all (a review killed
    finished runs by SIGINT and SIGTERM 0.2-0.5 s after their last line: exit -2, -15)."""
    import subprocess
    import sys

    script = (
        "import atexit, os, signal, sys, time; import gdrelu.cli as cli\n"
        f"cli.main = lambda: print('table') or {code}\n"
        f"cli._distributed = lambda: {distributed}\n"
        "atexit.register(lambda: print('handler ran') or "
        f"os.kill(os.getpid(), signal.{signum}) or time.sleep(20))\n"
        "cli.command()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    said = "table\nhandler ran\n" if distributed else "table\n"
    assert (done.returncode, done.stdout, done.stderr) == (code, said, "")


@pytest.mark.parametrize("index", [0, 1])
def test_a_process_that_ended_elsewhere_is_one_line_with_the_way_to_finish(
    index, tmp_path, monkeypatch, capsys
):
    """Another process killed mid-run: this one's next gather raises Gloo's ValueError
    within seconds (the distributed review saw it after 4-10 s), which printed a whole
    traceback, and JAX's exit handler aborted the process in C++ about 75 s later. It is
    one line, then exit 1 at once, past the exit handlers (`leave_at_once`): process 0
    names the command that finishes the run, the others say that process 0 does. Any
    other ValueError still propagates."""
    import gdrelu.cli

    left = []
    monkeypatch.setattr(gdrelu.cli, "leave_at_once", left.append)

    def lost(*args, **kwargs):
        raise ValueError("UNKNOWN: Gloo AllGather failed: Connection closed by peer\nmore")

    out = tmp_path / "run"
    process = _as_process(monkeypatch, index, run_experiment=lost)
    assert main(["run", *SMALL, "--out", str(out), *process]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    said = "gdrelu: error: another process ended (UNKNOWN: Gloo AllGather failed: Connection "
    assert err.startswith(said + "closed by peer); "), err
    if index == 0:
        assert err.endswith(f"finish with: gdrelu run --resume {out}"), err
    else:
        assert err.endswith("process 0 says how to finish the run") and not out.exists()
    assert left == [1]

    def other(*args, **kwargs):
        raise ValueError("not a collective's")

    process = _as_process(monkeypatch, index, run_experiment=other)
    with pytest.raises(ValueError, match="not a collective's"):
        main(["run", *SMALL, "--out", str(tmp_path / "other"), *process])


@pytest.mark.parametrize("index", [0, 1])
def test_a_run_directory_refused_on_process_0_ends_every_process_in_one_line(
    index, tmp_path, monkeypatch, capsys
):
    """--distributed, process 0 of 2 given an --out that is not empty: every process
    learns so at once (jax.distributed stubbed: the gather returns both processes'
    answers) and exits 2 on one line, before any training; process 0 names the directory.
    The others used to wait at their first gather until it timed out, in a traceback."""
    answers = []

    def gather(opened):  # first the checks (both passed), then the directory
        answers.append(bool(opened))
        return np.stack([np.asarray(len(answers) == 1), np.asarray(True)])  # process 0 failed

    out = tmp_path / "used"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    process = _as_process(monkeypatch, index, gather)  # training: never reached
    assert main(["run", *SMALL, "--out", str(out), *process]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and answers == [True, index == 1], err
    assert ("is not empty (notes.txt)" if index == 0 else "process 0 could not open") in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("index", [0, 1])
def test_a_memory_check_refused_on_one_host_ends_every_process_in_one_line(
    index, tmp_path, monkeypatch, capsys
):
    """--distributed, process 1's host has too little free memory: both processes exit 2
    on one line before the directory is made (process 0 would have made it, then waited
    at its first gather until it timed out); process 1 says why."""
    from gdrelu.cli import options
    from gdrelu.cli.errors import UsageError

    def check_fits(specs, budget, **kw):
        if index == 1:
            raise UsageError("--memory-budget: too little here")
        return budget

    gather = lambda ok: np.stack([np.asarray(True), np.asarray(False)])  # noqa: E731
    process = _as_process(monkeypatch, index, gather)  # training: never reached
    monkeypatch.setattr(options, "check_fits", check_fits)
    out = tmp_path / "run"
    assert main(["run", *SMALL, "--out", str(out), *process]) == 2
    err = capsys.readouterr().err.strip()
    want = "too little here" if index == 1 else "another process refused the run"
    assert len(err.splitlines()) == 1 and want in err and not out.exists(), err


def test_every_cpu_core_is_a_device_unless_the_caller_chose_a_count(monkeypatch):
    """`use_every_cpu_core` (JAX's config stubbed): one XLA CPU device per core as
    os.cpu_count() says (1 where it cannot say), nothing where jax_num_cpu_devices was set
    or XLA_FLAGS chose a count (it overrode XLA_FLAGS=--xla_force_host_platform_device_count=1)."""
    import types

    import jax

    from gdrelu.cli import backends

    updates = []
    config = types.SimpleNamespace(jax_num_cpu_devices=-1, update=lambda *a: updates.append(a))
    monkeypatch.setattr(jax, "config", config)
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    for cores, devices in ((6, 6), (None, 1)):
        monkeypatch.setattr(backends.os, "cpu_count", lambda cores=cores: cores)
        backends.use_every_cpu_core()
        assert updates.pop() == ("jax_num_cpu_devices", devices) and updates == []
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    backends.use_every_cpu_core()
    assert updates == []
    monkeypatch.delenv("XLA_FLAGS")
    config.jax_num_cpu_devices = 2  # the caller's count (the test suite's conftest sets 2)
    backends.use_every_cpu_core()
    assert updates == []


def test_the_bar_counts_every_run_of_every_cell_of_every_spec(tmp_path, monkeypatch):
    """The bar's total (training interrupted at once): widths 8, 4 × Δ 0, 0.1 × 10 runs =
    40 runs for `run`, twice as many for `compare` of two optimizers."""
    import gdrelu.runner
    from gdrelu.cli import run

    totals = []

    class Recording(run.RunProgress):
        def __init__(self, total, *args, **kwargs):
            totals.append(total)
            super().__init__(total, *args, **kwargs)

    monkeypatch.setattr(run, "RunProgress", Recording)
    monkeypatch.setattr(gdrelu.runner, "run_experiment", _interrupt_at_once)
    assert main(["run", *SMALL, "--out", str(tmp_path / "run")]) == 130
    compare = ["compare", "--optimizers", "gd,momentum", *SMALL, "--out", str(tmp_path / "cmp")]
    assert main(compare) == 130
    assert totals == [40, 80]


def test_compare_trains_each_optimizer_in_what_the_earlier_results_leave(monkeypatch):
    """`gdrelu compare` keeps every optimizer's finished runs to the end: the second spec's
    batches get the budget less the first spec's results (`memory.results_bytes`), the third
    less both (the runner stubbed: only the budgets it is given are checked). Before any
    trains, the bar hears of every spec's batches, planned for the budget that spec gets
    (a budget that splits the later specs' cells: more batches)."""
    import types

    from gdrelu import memory, runner
    from gdrelu.cli import run
    from gdrelu.spec import ExperimentSpec

    events = []
    monkeypatch.setattr(
        runner,
        "run_experiment",
        lambda spec, *, memory_budget, **kw: events.append(("train", memory_budget)) or [],
    )
    specs = [
        ExperimentSpec(widths=(4, 8), runs=400, optimizer=name)
        for name in ("gd", "momentum", "adam")
    ]
    progress = types.SimpleNamespace(
        on_check=print, on_cells_done=print, on_stored=print, on_forecast=print,
        on_batches=lambda i, batches: events.append(("plan", i, batches)),
    )  # fmt: skip
    first, second = (memory.results_bytes(spec) for spec in specs[:2])
    budget = 2 * first + second + 3 * 10**6  # the last spec's batches get 3 MB
    assert run._train(specs, progress, processes=None, budget=budget, out=None) == []
    assert first > 0 and second > 0
    budgets = [budget, budget - first, budget - first - second]
    plans = [runner.first_batches(s, memory_budget=b) for s, b in zip(specs, budgets, strict=True)]
    assert events == [("plan", i, p) for i, p in enumerate(plans)] + [("train", b) for b in budgets]
    assert len(plans[0]) < len(plans[2]) and {c.width for b in plans[2] for c in b} == {4, 8}


def test_compare_measures_the_free_memory_once(monkeypatch, tmp_path):
    """The budget that the specs were checked against is the one they train in: free
    memory measured again after the directory is written could refuse, or go below the
    first spec's results, halfway (the runner stubbed)."""
    from gdrelu import memory, runner
    from gdrelu.cli import main

    measured, budgets = [], []
    monkeypatch.setattr(memory, "free_device_bytes", lambda: None)
    monkeypatch.setattr(memory, "available_host_bytes", lambda: measured.append(1) or 2**32)
    monkeypatch.setattr(
        runner,
        "run_experiment",
        lambda spec, *, memory_budget, **kw: budgets.append(memory_budget) or [],
    )
    monkeypatch.setattr("gdrelu.cli.run._report", lambda *args: None)
    compare = ["compare", "--optimizers", "gd,momentum", *SMALL, "--quiet"]
    assert main([*compare, "--out", str(tmp_path / "cmp")]) == 0
    assert len(measured) == 1 and budgets[0] == int(memory.HOST_SHARE * 2**32)


def test_the_last_line_names_the_time_before_a_resume_only_after_one():
    from gdrelu.cli.progress import finished_line

    backend = "cpu (cpu, 2 device(s))"
    assert finished_line(40, 2.04, 0.0, backend, "runs/a") == (
        "40 runs in 2.0 s on cpu (cpu, 2 device(s)); results in runs/a/"
    )
    assert finished_line(40, 1002.04, 1000.0, backend, "runs/a", stored=39) == (
        "40 runs in 1002.0 s (1000.0 s of it before the resume) on cpu (cpu, 2 device(s)); "
        "results in runs/a/"
    )
    assert finished_line(40, 1000.04, 1000.0, backend, "runs/a", stored=40) == (
        "40 runs in 1000.0 s, all trained before the resume, on cpu (cpu, 2 device(s)); "
        "results in runs/a/"
    )


@pytest.mark.parametrize("command", [[], ["run"], ["compare"]])
def test_help_of_every_command_prints(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert "usage: gdrelu" in capsys.readouterr().out


# The help lists every value each flag accepts, from the package's constants.
def _help_values():
    from gdrelu import section10
    from gdrelu.data import DATASETS
    from gdrelu.init import BIAS_INITS, INITS
    from gdrelu.optim import NAMED, SAMPLERS
    from gdrelu.protocols import PROTOCOLS
    from gdrelu.spec import BUCKETS, DTYPES, STEP_SIZE_RULES

    return {
        "--dtype": DTYPES,
        "--optimizer": tuple(NAMED),
        "--optimizers": tuple(NAMED),
        "--step-size": STEP_SIZE_RULES,
        "--sampler": SAMPLERS,
        "--data": (*DATASETS, "file"),
        "--init": tuple(INITS),
        "--bias-init": BIAS_INITS,
        "--buckets": BUCKETS,
        "--protocol": tuple(PROTOCOLS),
        "--preset": ("section10",),
        "--scale": tuple(section10.SCALES),
    }


@pytest.mark.parametrize("command", ["run", "compare"])
def test_help_lists_every_accepted_value(command, capsys, monkeypatch):
    import re

    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out.split("\noptions:\n", 1)[1]
    blocks = {}
    for block in re.split(r"\n  (?=-)", "\n" + text):
        flag, _, rest = block.strip().partition(" ")
        blocks[flag.rstrip(",")] = " ".join(rest.split())
    expected = _help_values()
    if command == "compare":
        for flag in ("--optimizer", "--protocol", "--preset", "--scale"):
            del expected[flag]
    else:
        del expected["--optimizers"]
    for flag, values in expected.items():
        for value in values:
            pattern = rf"(?<![\w-]){re.escape(value)}(?![\w-])"
            assert re.search(pattern, blocks[flag]), (flag, value, blocks[flag])


def test_the_scale_helps_name_the_section10_grid_each_reproduce_scale_trains(capsys):
    """`run --scale` and `reproduce --scale` say which Section 10 grid `reproduce` trains
    at each of its scales (the two commands name their scales apart): the grid whose
    specs `reproduce` builds."""
    from gdrelu import reproduce, section10

    helps = {}
    for command in ("run", "reproduce"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        helps[command] = " ".join(capsys.readouterr().out.split())
    for name in reproduce.SCALES:
        trained = reproduce.experiment_specs("section10", name)
        (grid,) = (g for g, s in section10.SCALES.items() if section10.group_specs(s) == trained)
        assert f"{grid}: reproduce --scale {name}'s" in helps["run"]
        assert f"{grid} at {name}" in helps["reproduce"]


@pytest.mark.parametrize(
    ("argv", "ending"),
    [
        (["run", *SMALL, "--seed", "1"], "(differs in seed: recorded 0, given 1)"),  # only it
        # one spec: its field `optimizer` differs (`optimizers` is a comparison's list)
        (
            ["run", *SMALL, "--optimizer", "adam"],
            '(differs in optimizer: recorded "gd", given "adam")',
        ),
        # it listed the 21 fields in which a run's spec differs from the preset's
        (
            ["run", "--preset", "section10"],
            "holds a run, not the section10 preset; resume it without --preset",
        ),
        # it finished the run as a comparison of one optimizer, without a word
        (["compare"], "holds a run of one optimizer, not a comparison; finish it with gdrelu run"),
        (["compare", "--optimizers", "gd,adam"], "holds a run of one optimizer, not a comparison"),
    ],
)
def test_a_resume_with_other_settings_names_what_differs(argv, ending, small_run, capsys):
    """A resume whose flags disagree with the run's manifest exits 2 in one line naming
    the difference."""
    assert main([*argv, "--resume", str(small_run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert ending in err, err


def test_a_flag_that_makes_no_spec_with_a_comparisons_names_what_differs(
    small_run, tmp_path, capsys
):
    """`run --resume DIR --optimizer adam` on a comparison of GD and SGD said "stop_on:
    ['degenerate', 'stuck'] are proofs for gd ... only": the flag merged into the recorded
    GD spec (with its proofs) made no spec, and that error came first. Now the refusal
    names the field the flag changes."""
    import json

    from gdrelu.cli.options import specs_from

    started = _started_copy(small_run, tmp_path / "compared")
    manifest = json.loads((started / "manifest.json").read_text())
    (recorded,) = manifest["specs"]
    manifest["specs"] = [s.to_dict() for s in specs_from(recorded, ["gd", "sgd"])]
    (started / "manifest.json").write_text(json.dumps(manifest))
    assert main(["run", "--resume", str(started), "--optimizer", "adam"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith('(differs in optimizer: recorded "gd", given "adam")'), err
    assert main(["compare", "--resume", str(started), "--optimizers", "gd,adam"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("(differs in optimizers: recorded gd,sgd, given gd,adam)"), err
    assert main(["run", "--resume", str(started), "--optimizer", "gd"]) == 2  # "given gd,gd"
    err = capsys.readouterr().err.strip()
    assert err.endswith("(differs in optimizers: recorded gd,sgd, given gd)"), err


def test_a_resume_takes_the_deltas_in_any_order(small_run, tmp_path):
    """docs: flags given with --resume must agree, the order of widths and offsets aside;
    the run keeps its own order, so its table is the uninterrupted run's."""
    started = _started_copy(small_run, tmp_path / "started")
    flags = [*SMALL[:2], "--deltas", "0.1,0", *SMALL[4:]]
    assert main(["run", *flags, "--resume", str(started)]) == 0
    assert (started / "runs.csv").read_text() == (small_run / "runs.csv").read_text()


def test_resume_and_out_together_are_refused(small_run, tmp_path, capsys):
    """--resume names the run's directory: an --out beside it is refused, not ignored."""
    other = tmp_path / "other"
    argv = ["run", "--resume", str(small_run), "--out", str(other), "--quiet"]
    assert "not with --out" in _refused_in_one_line(argv, other, capsys)


@pytest.mark.parametrize("flag", [["--batch-size", "16"], ["--num-heldout", "1024"]])
def test_a_resume_refuses_a_setting_a_fresh_run_refuses(small_run, flag, capsys):
    """Each value is the spec's own (16, 1024), so the specs agree; a fresh GD run on the
    six points refuses both as settings that change nothing, and so does its resume."""
    assert main(["run", *SMALL, *flag, "--resume", str(small_run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"error: {flag[0]}: " in err, err


def test_a_resume_names_an_unknown_config_setting_as_a_fresh_run_does(small_run, tmp_path, capsys):
    """`--resume DIR --config typo.toml` with `runz = 3` said the run was started with
    another spec ("runz: not recorded, given 3"); a fresh run says it is no setting, and
    where it was set."""
    config = tmp_path / "typo.toml"
    config.write_text("runz = 3\n")
    assert main(["run", "--resume", str(small_run), "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gdrelu: error: runz: unknown setting (did you mean 'runs'?"), err
    assert err.endswith(f"(runz is set by --config {config})") and len(err.splitlines()) == 1


def test_a_directory_without_a_manifest_or_its_kernel_is_not_resumed(small_run, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["run", "--resume", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "manifest.json" in err, err
    old = tmp_path / "old"
    old.mkdir()
    manifest = json.loads((small_run / "manifest.json").read_text())
    del manifest["settings"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert main(["run", "--resume", str(old), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "kernel" in err and "older" in err, err
    assert sorted(p.name for p in old.iterdir()) == ["manifest.json"]


def _interrupted_after_first_unit(monkeypatch):
    """Make `runner.run_experiment` raise KeyboardInterrupt once a unit is stored."""
    import gdrelu.runner

    original = gdrelu.runner.run_experiment

    def interrupted(spec, *, on_cells_done, **kwargs):
        def done(cells):
            on_cells_done(cells)
            raise KeyboardInterrupt

        return original(spec, on_cells_done=done, **kwargs)

    monkeypatch.setattr(gdrelu.runner, "run_experiment", interrupted)
    return lambda: monkeypatch.setattr(gdrelu.runner, "run_experiment", original)


def test_compare_takes_a_batch_size_for_its_minibatch_optimizers():
    """--batch-size in a compare acts on SGD, so GD beside it is not refused."""
    from gdrelu.cli import options
    from gdrelu.cli.parser import parser

    args = parser().parse_args(["compare", "--optimizers", "gd,sgd", "--batch-size", "32"])
    assert [(s.optimizer, s.batch_size) for s in options.requested_specs(args)] == [
        ("gd", 32),
        ("sgd", 32),
    ]
    # --sampler too: it was refused for GD with advice to pass --optimizer sgd, a flag
    # compare does not have
    flags = ["compare", "--optimizers", "gd,sgd,adam", "--sampler", "epoch", "--batch-size", "4"]
    specs = options.requested_specs(parser().parse_args(flags))
    assert [(s.optimizer, s.trained_by.sampler) for s in specs] == [
        ("gd", "full"),
        ("sgd", "epoch"),
        ("adam", "epoch"),
    ]


def _interrupted_run_of_a_relative_data_file(tmp_path, monkeypatch) -> None:
    """`gdrelu run --data-file d.csv --out out` in tmp_path, stopped after its first unit."""
    (tmp_path / "d.csv").write_text("x,y\n-3,1\n-2,0.5\n-1,0\n1,0\n2,0.7\n3,2\n")
    monkeypatch.chdir(tmp_path)
    restore = _interrupted_after_first_unit(monkeypatch)
    flags = ["--data", "file", "--data-file", "d.csv", "--widths", "8,4", "--deltas", "0",
             "--runs", "4", "--check-every", "20", "--max-checks", "2", "--quiet"]  # fmt: skip
    assert main(["run", *flags, "--out", "out"]) == 130
    restore()


def test_a_resume_after_the_data_file_changed_is_refused(tmp_path, monkeypatch, capsys):
    """The manifest records the data file's content hash: the units stored before the
    change were trained on other points, so --resume refuses, naming it."""
    _interrupted_run_of_a_relative_data_file(tmp_path, monkeypatch)
    capsys.readouterr()
    (tmp_path / "d.csv").write_text("x,y\n-3,5\n-2,0.5\n-1,0\n1,0\n2,0.7\n3,-4\n")
    out = tmp_path / "out"
    assert main(["run", "--resume", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "started on another data file" in err, err
    assert not (out / "runs.csv").exists()


def test_a_relative_data_file_resumes_from_another_directory(tmp_path, monkeypatch, capsys):
    """The manifest records the data file's absolute path: --resume from elsewhere reads
    the same file (it was refused: 'cannot read d.csv')."""
    _interrupted_run_of_a_relative_data_file(tmp_path, monkeypatch)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["run", "--resume", str(tmp_path / "out"), "--quiet"]) == 0, capsys.readouterr()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["specs"][0]["data_file"] == str((tmp_path / "d.csv").resolve())


def test_a_run_that_recorded_a_relative_data_file_resumes_with_the_flag(
    tmp_path, monkeypatch, capsys
):
    """A manifest from before paths were recorded absolute holds the path as given: the
    same file named again on --resume agrees with it."""
    _interrupted_run_of_a_relative_data_file(tmp_path, monkeypatch)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    manifest["specs"][0]["data_file"] = "d.csv"  # as recorded before
    (tmp_path / "out" / "manifest.json").write_text(json.dumps(manifest))
    resumed = ["run", "--resume", "out", "--data", "file", "--data-file", "./d.csv", "--quiet"]
    assert main(resumed) == 0, capsys.readouterr().err


def test_a_run_whose_data_file_moved_resumes_with_its_new_path(tmp_path, monkeypatch, capsys):
    """The file is named by its content hash: the recorded path was read first ('cannot
    read d.csv'), so a moved file could not be resumed without editing the manifest."""
    _interrupted_run_of_a_relative_data_file(tmp_path, monkeypatch)
    (tmp_path / "d.csv").rename(tmp_path / "moved.csv")
    assert main(["run", "--resume", "out", "--quiet"]) == 2
    assert "if the file moved, name it with --data-file" in capsys.readouterr().err
    assert main(["run", "--resume", "out", "--data-file", "moved.csv", "--quiet"]) == 0, (
        capsys.readouterr().err
    )
    (tmp_path / "other.csv").write_text("x,y\n-3,1\n-2,0.5\n-1,0\n1,0\n2,0.7\n3,2.5\n")
    assert main(["run", "--resume", "out", "--data-file", "other.csv", "--quiet"]) == 2
    assert "started on another data file" in capsys.readouterr().err


def test_jax_threefry_that_is_not_partitionable_is_refused(tmp_path, capsys):
    import jax

    jax.config.update("jax_threefry_partitionable", False)
    try:
        assert main(["run", *SMALL, "--out", str(tmp_path / "o")]) == 2
    finally:
        jax.config.update("jax_threefry_partitionable", True)
    err = capsys.readouterr().err.strip()
    assert "jax_threefry_partitionable" in err and not (tmp_path / "o").exists(), err


@pytest.mark.parametrize("buckets", [pytest.param("pow2", marks=pytest.mark.slow), "auto"])
def test_a_resume_pads_and_buckets_as_the_uninterrupted_run(
    buckets, small_run, tmp_path, monkeypatch
):
    """--widths 8,4 interrupted after width 8's unit, then resumed with --widths 4,8 or
    with --resume alone: the table of the uninterrupted run, bit for bit. (SMALL's
    settings: with auto buckets the uninterrupted run is `small_run`, whose programs the
    runs here reuse.)"""
    import shutil

    rest = [*SMALL[2:], "--buckets", buckets]
    whole = small_run
    if buckets != "auto":
        whole = tmp_path / "whole"
        assert main(["run", "--widths", "8,4", *rest, "--out", str(whole)]) == 0
    restore = _interrupted_after_first_unit(monkeypatch)
    part = tmp_path / "part"
    assert main(["run", "--widths", "8,4", *rest, "--out", str(part)]) == 130
    restore()
    assert [p.name for p in (part / "units").iterdir()] == ["gd-w8.npz"]
    alone = tmp_path / "alone"
    shutil.copytree(part, alone)
    assert main(["run", "--widths", "4,8", *rest, "--resume", str(part)]) == 0
    assert main(["run", "--resume", str(alone), "--quiet"]) == 0
    for resumed in (part, alone):
        assert (resumed / "runs.csv").read_text() == (whole / "runs.csv").read_text()


def test_a_bug_building_the_spec_is_not_a_configuration_error(tmp_path, monkeypatch):
    """Only SpecError and the CLI's own errors read as configuration errors (exit 2)."""
    from gdrelu.spec import ExperimentSpec

    def broken(cls, values):
        raise TypeError("a bug")

    monkeypatch.setattr(ExperimentSpec, "from_dict", classmethod(broken))
    out = tmp_path / "never"
    with pytest.raises(TypeError, match="a bug"):
        main(["run", "--widths", "4", "--out", str(out)])
    assert not out.exists()


def test_only_storage_errors_are_reported_in_one_line(tmp_path, monkeypatch, capsys):
    """An OSError of the disk (a quota, here) ends in one line naming its file, exit 1;
    any other OSError (a missing file) is a bug and keeps its traceback. The command's
    warning format and Ctrl-C handler are Python's again once it returns."""
    import errno
    import signal
    import warnings

    from gdrelu.cli import run

    raised, seen = [], []

    def execute(args, started):
        seen.append(warnings.formatwarning("careful", UserWarning, "f.py", 1))
        raise raised[-1]

    monkeypatch.setattr(run, "execute", execute)
    formatwarning, handler = warnings.formatwarning, signal.getsignal(signal.SIGINT)
    argv = ["run", "--widths", "4", "--out", str(tmp_path / "never")]
    raised.append(OSError(errno.EDQUOT, "Disk quota exceeded", "/data/runs.csv"))
    assert main(argv) == 1
    assert capsys.readouterr().err == "gdrelu: error: Disk quota exceeded: /data/runs.csv\n"
    raised.append(NotADirectoryError(errno.ENOTDIR, "Not a directory", "/data/units/parts"))
    assert main(argv) == 1  # units/ replaced by a file while a run writes its parts
    assert capsys.readouterr().err == "gdrelu: error: Not a directory: /data/units/parts\n"
    raised.append(FileNotFoundError(errno.ENOENT, "No such file or directory", "/a/bug"))
    with pytest.raises(FileNotFoundError):
        main(argv)
    assert seen == ["gdrelu: warning: careful\n"] * 3
    assert warnings.formatwarning is formatwarning
    assert signal.getsignal(signal.SIGINT) is handler


def test_a_reader_that_leaves_stdout_ends_the_command_on_one_line(tmp_path, monkeypatch, capsys):
    """`gdrelu run | head`: the table goes to a pipe whose reader has left. The command
    says so on stderr with the run directory it held, exits 1 with no traceback, and its
    stdout goes to /dev/null, so that Python's flush at exit does not fail again."""
    import sys

    from gdrelu.cli import outdir, run

    out = tmp_path / "run"

    def execute(args, started):
        outdir.open_directory(args, {"cells": []})
        print("row\n" * 20_000)  # more than a pipe's buffer: written at once
        return 0

    read, write = os.pipe()
    os.close(read)
    stdout = os.fdopen(write, "w")
    monkeypatch.setattr(run, "execute", execute)
    monkeypatch.setattr(sys, "stdout", stdout)
    try:
        assert main(["run", "--widths", "4", "--out", str(out)]) == 1
        stdout.write("more\n" * 20_000)
        stdout.flush()  # /dev/null now: no error
    finally:
        stdout.close()
    said = capsys.readouterr().err
    assert said == f"gdrelu: error: the output's reader left; the run directory: {out}/\n"


def test_no_command_prints_the_help_and_exits_2(capsys):
    assert main([]) == 2
    assert capsys.readouterr().out.startswith("usage: gdrelu")


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_resumed_comparison_counts_every_optimizers_stored_units_first(tmp_path, monkeypatch):
    """Resuming `compare`: heavy ball's stored unit is on the bar before GD trains (it
    was counted only once heavy ball started, so the bar sat low and the ETA high); each
    spec's runs are then trained or read back by the runner (stubbed here)."""
    import types

    from gdrelu import runner, store
    from gdrelu.cli import run
    from gdrelu.spec import ExperimentSpec

    specs = [ExperimentSpec(widths=(4, 8), deltas=(0.0,), runs=3, optimizer=name)
             for name in ("gd", "momentum")]  # fmt: skip
    (tmp_path / store.UNITS).mkdir()
    momentum_4 = [finished_cell(specs[1].cells()[0], [Status.CROSSED] * 3)]
    store.save_unit(tmp_path, runner.unit_name(specs[1], 4), momentum_4, 1.0)
    events = []

    def run_experiment(spec, *, stored, **kw):  # the units read once, not counted again
        assert "on_stored" not in kw
        events.append(("train", spec.optimizer, sorted(stored)))
        return []

    monkeypatch.setattr(runner, "run_experiment", run_experiment)
    progress = types.SimpleNamespace(
        on_check=print,
        on_cells_done=print,
        on_stored=lambda i, cells: events.append(("stored", i, [c.cell.width for c in cells])),
        on_batches=print,
        on_forecast=print,
    )
    run._train(specs, progress, processes=None, budget=10**9, out=tmp_path)
    assert events == [("stored", 1, [4]), ("train", "gd", []), ("train", "momentum", [4])]


def test_the_bar_shows_the_time_left_from_checks_not_runs():
    """Runs that cannot stop early need every check, whatever the runs finished: after 3
    of 10 checks of width 4 at 2 s each, its cell needs 7 more and width 8's all 10, each at
    most 8 / 4 times width 4's 2 s (at most 54 s); once width 8's cell is loaded from its
    unit (not timed), width 4's 6 left take 12 s."""
    import io

    from gdrelu.cli.progress import RunProgress
    from gdrelu.progress import spec_clock
    from gdrelu.spec import ExperimentSpec

    spec = ExperimentSpec(widths=(4, 8), deltas=(0.0,), runs=3, max_checks=10, stop_on=())
    fake = FakeClock()
    progress = RunProgress(6, spec_clock([spec], clock=fake), enabled=True, file=io.StringIO())
    status = np.full(3, Status.RUNNING, np.int8)
    for k in range(1, 4):
        fake.now += 2.0
        status[k - 1] = Status.UNFINISHED
        progress.on_check(0, (4,), k, status)
    assert progress.bar.n == 3
    assert "unfinished=3, eta ≤ 00:54" in str(progress.bar)
    fake.now += 60.0  # loading a unit is not a check
    progress.on_stored(0, [finished_cell(spec.cells()[1], [Status.CROSSED] * 3, [True] * 3)])
    fake.now += 2.0
    progress.on_check(0, (4,), 4, status)
    assert progress.bar.n == 6
    assert str(progress.bar).endswith("eta 00:12]")
    progress.close()


def _run_under_a_bar(spec, monkeypatch, processes=None):
    """`runner.run_experiment(spec)` of one cell of width 4 reporting to a bar of
    `spec.runs` runs, training stubbed (each batch checks once, its runs all unfinished):
    the cell results, the bar's (n, total) after each batch's check, and at the end."""
    import functools
    import io

    from gdrelu import runner
    from gdrelu.cli.progress import RunProgress
    from gdrelu.progress import spec_clock

    def train(work, *, on_check, **kwargs):
        ((cell, indices),) = work
        on_check((4,), 1, np.full(indices.size, Status.UNFINISHED, np.int8))
        shown.append((progress.bar.n, progress.bar.total))
        return [finished_cell(cell, [Status.UNFINISHED] * indices.size, [False] * indices.size)]

    shown = []
    monkeypatch.setattr(runner, "train_cells", train)
    progress = RunProgress(spec.runs, spec_clock([spec]), enabled=True, file=io.StringIO())
    cells = runner.run_experiment(
        spec,
        on_check=functools.partial(progress.on_check, 0),
        on_cells_done=functools.partial(progress.on_cells_done, 0),
        on_forecast=functools.partial(progress.on_forecast, 0),
        processes=processes,
    )
    end = (progress.bar.n, progress.bar.total)
    progress.close()
    return cells, shown, end


def test_the_bar_grows_with_the_runs_a_target_halfwidth_adds(monkeypatch):
    """A cell of 3 runs grown to 6 by the runner (training stubbed: no 6 runs meet a
    half-width of 0.1): the added batch's check counts the 3 earlier runs and its own 3,
    so the bar shows 6 of 6 then, not only once the cell is done."""
    from gdrelu.spec import ExperimentSpec

    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=3, target_halfwidth=0.1, max_runs=6,
                          check_every=20, max_checks=2)  # fmt: skip
    (cell,), shown, end = _run_under_a_bar(spec, monkeypatch)
    assert cell.result.status.size == 6
    assert shown == [(3, 3), (6, 6)] and end == (6, 6)


def test_the_bar_of_a_growing_cell_totals_the_runs_it_is_expected_to_end_with(monkeypatch):
    """A cell of 50 runs, none stuck, grown to a half-width of 0.01: its interval
    [0, 1 - 0.025^(1/n)] is narrow enough first at n = 183, so in batches of 50 it is
    expected to end at 200 from its first batch on, and the bar says 100/200 and 150/200
    on the way, not 100%. The forecast is right here: the fraction stays 0."""
    from gdrelu.spec import ExperimentSpec

    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=50, target_halfwidth=0.01,
                          max_runs=400, check_every=20, max_checks=2)  # fmt: skip
    (cell,), shown, end = _run_under_a_bar(spec, monkeypatch)
    assert cell.result.status.size == 200
    assert shown == [(50, 50), (100, 200), (150, 200), (200, 200)] and end == (200, 200)


def test_a_resumed_cell_that_had_grown_adds_its_runs_to_the_bar_s_total():
    """A resume reads width 8's two cells back, grown from 10 runs to 60 each; width 16's
    two cells still train their first 10. The bar said 120/120 (100%) through width 16's
    first batch; the total now counts the stored cells' 100 runs beyond their first."""
    import io

    from gdrelu.cli.progress import RunProgress
    from gdrelu.progress import spec_clock
    from gdrelu.spec import ExperimentSpec

    spec = ExperimentSpec(widths=(8, 16), deltas=(0.0, 1.0), runs=10, target_halfwidth=0.12,
                          max_runs=60)  # fmt: skip
    progress = RunProgress(40, spec_clock([spec]), enabled=True, file=io.StringIO())
    stored = [finished_cell(c, [Status.CROSSED] * 60, [True] * 60) for c in spec.cells()[:2]]
    progress.on_stored(0, stored)
    assert (progress.bar.n, progress.bar.total) == (120, 140)
    progress.on_check(0, (16,), 1, np.full(20, Status.CROSSED, np.int8))
    assert (progress.bar.n, progress.bar.total) == (140, 140)
    progress.close()


def test_the_bar_counts_each_batch_from_its_own_first_check():
    """Width 4's batch finishes its 3 runs, then width 8's batch reports 1 of its 3
    finished: 4 runs done, not 1 (a batch's statuses count from its own start)."""
    import io

    from gdrelu.cli.progress import RunProgress
    from gdrelu.progress import spec_clock
    from gdrelu.spec import ExperimentSpec

    spec = ExperimentSpec(widths=(4, 8), deltas=(0.0,), runs=3, max_checks=10, stop_on=())
    progress = RunProgress(6, spec_clock([spec]), enabled=True, file=io.StringIO())
    done = np.full(3, Status.UNFINISHED, np.int8)
    progress.on_check(0, (4,), 1, done)
    progress.on_cells_done(0, [finished_cell(Cell(4, 0.0, spec), done, [False] * 3)])
    assert progress.bar.n == 3
    one = np.array([Status.UNFINISHED, Status.RUNNING, Status.RUNNING], np.int8)
    progress.on_check(0, (8,), 1, one)
    assert progress.bar.n == 4
    progress.close()


def test_a_swallowed_ctrl_c_stops_the_run_at_the_next_check():
    """A Ctrl-C whose KeyboardInterrupt a gc callback swallowed is raised again at the next
    check of the batch in training, not only once the batch ends; `restore` forgets it."""
    import signal

    from gdrelu.cli import interrupt
    from gdrelu.cli.progress import RunProgress
    from gdrelu.progress import spec_clock
    from gdrelu.spec import ExperimentSpec

    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=3, max_checks=10, stop_on=())
    progress = RunProgress(3, spec_clock([spec]), enabled=False)
    running = np.full(3, Status.RUNNING, np.int8)
    previous = interrupt.install()
    try:
        with contextlib.suppress(KeyboardInterrupt):  # as a gc callback's is swallowed
            os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            progress.on_check(0, (4,), 1, running)
        with pytest.raises(KeyboardInterrupt):
            progress.on_cells_done(0, [])
    finally:
        interrupt.restore(previous)
    progress.on_check(0, (4,), 2, running)
    progress.close()


def test_the_bar_of_process_0_counts_the_runs_every_process_trained(monkeypatch):
    """--distributed: process 0's checks see only its own share (runs 0, 3, 6 of 7 with 3
    processes; training and the other processes stubbed), but the cell it gathers holds
    all 7: the bar ends at 7 of 7, not 3 of 7."""
    import jax

    from gdrelu import runner
    from gdrelu.spec import ExperimentSpec

    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=7, max_checks=10, stop_on=())
    cell = Cell(4, 0.0, spec)

    def gather(local):
        shares = [finished_cell(cell, [Status.UNFINISHED] * 3, [False] * 3)] * 3
        return jax.tree.map(lambda *v: np.stack(v), *[(s.step_size, s.result) for s in shares])

    processes = runner.Processes(0, 3, agreeing(gather, 3))
    (result,), _, end = _run_under_a_bar(spec, monkeypatch, processes)
    assert result.result.status.size == 7
    assert end == (7, 7)


def test_the_table_partitions_the_runs():
    """SGD with stop_on = crossed and the final-network rule: a run the crossing rule
    stopped is not stuck, even where its last network is in the linear regime (it was
    halted where it may escape); escaped + stuck + diverged = runs. Under
    GD's certificate rule the same statuses partition as crossed, stuck (certified) and
    other (early-stopped, diverged)."""
    from gdrelu.analysis import cell_summary, format_table
    from gdrelu.spec import ExperimentSpec

    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=7, **protocol("sgd"))
    status = [Status.CROSSED] * 4 + [Status.EARLY_STOPPED, Status.EARLY_STOPPED, Status.DIVERGED]
    escaped = [True, False, False, False, True, False, True]  # a diverged run reads escaped
    cell = cell_summary(finished_cell(Cell(4, 0.0, spec), status, escaped))
    assert (cell["stuck"], cell["crossed_not_stuck"]) == (1, 4)
    header, row = format_table([cell]).splitlines()
    assert header.split()[3:7] == ["runs", "escaped", "stuck", "diverged"]
    assert row.split()[3:7] == ["7", "5", "1", "1"]

    gd = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=7)
    status[1] = Status.STUCK
    cell = cell_summary(finished_cell(Cell(4, 0.0, gd), status, escaped))
    header, row = format_table([cell]).splitlines()
    assert header.split()[3:7] == ["runs", "crossed", "stuck", "other"]
    assert row.split()[3:7] == ["7", "3", "1", "3"]


def test_a_protocol_lays_its_fields_under_the_config_and_flags(tmp_path):
    """The config's step size over the protocol's, the flag's max_checks over the
    config's. (The runs of tests/test_reproduce.py's tiny SGD variant, 6 runs of width 8
    at Δ = 0.1 with the protocol's minibatches and checks: their programs come from the
    suite's compilation cache when that module compiled them first; the step sizes are
    data.)"""
    config = tmp_path / "exp.toml"
    config.write_text('step_size = "small"\nmax_checks = 5\n')
    out = tmp_path / "sgd"
    args = ["--protocol", "sgd", "--widths", "8", "--deltas", "0.1", "--runs", "6",
            "--max-checks", "2", "--config", str(config), "--quiet"]  # fmt: skip
    assert main(["run", *args, "--out", str(out)]) == 0
    spec = json.loads((out / "summary.json").read_text())["spec"]
    assert spec["optimizer"] == "sgd" and spec["sampler"] == "multinomial"
    assert spec["early_stopping"] is True and spec["stop_on"] == ["crossed"]
    assert spec["batch_size"] == 16  # the protocol's, where nothing else sets it
    assert (spec["step_size"], spec["max_checks"]) == ("small", 2)


@pytest.mark.parametrize(
    "args", [["--widths", "4,64"], ["--preset", "section10", "--scale", "tiny"]]
)
def test_a_width_that_cannot_fit_the_memory_budget_exits_2(args, tmp_path, capsys):
    """One run of these widths (and of the preset's) needs more than a 10 kB budget:
    refused on one line naming the width and the budget, before the output directory."""
    out = tmp_path / "never"
    argv = ["run", *args, "--memory-budget", "1e-5", "--quiet", "--out", str(out)]
    err = _refused_in_one_line(argv, out, capsys)
    assert err.startswith("gdrelu: error: width "), err
    assert "budget" in err and "Traceback" not in err


def test_a_resumed_run_over_the_memory_budget_is_told_only_to_raise_it(small_run, tmp_path, capsys):
    """--resume refuses any change to the spec: a resumed run's memory refusal said
    "lower --widths", and --buckets none where padded, which it would then refuse. It says
    to raise --memory-budget alone; exit 2, the directory as it was."""
    started = _started_copy(small_run, tmp_path / "started")
    before = sorted(p.relative_to(started) for p in started.rglob("*"))
    assert main(["run", "--resume", str(started), "--memory-budget", "1e-5", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("gdrelu: error: width "), err
    assert err.endswith("; raise --memory-budget") and "lower" not in err, err
    assert sorted(p.relative_to(started) for p in started.rglob("*")) == before


def test_a_refusal_names_the_batch_size_whose_words_fill_the_run(tmp_path, capsys):
    """SGD with --batch-size 2²⁴ draws 8.6 GB of minibatch words ahead for a run of width
    16: the refusal said "lower --widths"; it names --batch-size first."""
    out = tmp_path / "never"
    argv = ["run", "--widths", "16", "--runs", "2", "--deltas", "0", "--optimizer", "sgd",
            "--batch-size", str(1 << 24), "--max-checks", "2", "--check-every", "10",
            "--memory-budget", "4", "--quiet", "--out", str(out)]  # fmt: skip
    err = _refused_in_one_line(argv, out, capsys)
    assert err.startswith("gdrelu: error: width 16: "), err
    assert err.endswith("; lower --batch-size or --widths, or raise --memory-budget"), err


def _write_bad_data(directory):
    """Data files each refused for one reason (tests below)."""
    import io
    import zipfile

    import numpy as np

    files = {
        "no_header.csv": "-3,-1\n-2,2\n-1,-1\n1,1\n2,-2\n3,1\n",
        "zero.csv": "x,y\n-3,-1\n0,2\n-1,-1\n1,1\n2,-2\n",
        "near_zero.csv": "x,y\n-0.3,1\n-0.2,2\n5.55e-17,0\n0.1,1\n0.2,-2\n",
        "small.csv": "x,y\n-3,-1\n1e-9,2\n-1,-1\n1,1\n2,-2\n",
        "good.csv": "x,y\n-3,-1\n-2,2\n-1,-1\n1,1\n2,-2\n3,1\n",
        "empty.csv": "",
    }
    for name, text in files.items():
        (directory / name).write_text(text)
    x = np.array([-3.0, -2, -1, 1, 2, 3])
    np.save(directory / "one.npy", x)
    (directory / "one.npz").write_bytes((directory / "one.npy").read_bytes())  # not an archive
    np.savez(directory / "complex.npz", x=x + 1j, y=x)
    np.savez(directory / "text.npz", x=np.array(["a"] * 6), y=x)
    whole = io.BytesIO()
    np.savez(whole, x=x, y=x)
    (directory / "cut.npz").write_bytes(whole.getvalue()[:60])  # a truncated zip
    assert not zipfile.is_zipfile(directory / "cut.npz")


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        ("--data-file zero.csv", "data_file: {d}/zero.csv has a point at x = 0,"),
        ("--data-file near_zero.csv", "near_zero.csv has a point at x = 5.55e-17, 0 within 64 "),
        ("--data-file small.csv --dtype float32", "x = 1e-09, 0 within 64 float32 ulp of its la"),
        ("--data-file empty.csv", "data_file: {d}/empty.csv"),
        ("--data-file one.npz", "data_file: {d}/one.npz is one array"),
        ("--data-file complex.npz", "data_file: {d}/complex.npz: x and y must be real"),
        ("--data-file text.npz", "data_file: {d}/text.npz: x and y must be real"),
        ("--data-file cut.npz", "data_file: {d}/cut.npz is not an NPZ archive"),
        ("--data-file good.csv --split 0.2,0.4,0.4", "split: leaves 1 training point of 6"),
        (
            "--data-file good.csv --split 0.5,0.25,0.25 --step-size ntk --optimizer sgd "
            "--sampler epoch --batch-size 4",
            "batch_size: 4 exceeds the 3 training points",
        ),
        ("--data multi-axis", "dim: multi-axis data need dim ≥ 2"),
        ("--step-size 1e300 --step-factor 1e300", "step_size: 1e+300 × step_factor 1e+300"),
        ("--step-size 1e-50 --dtype float32", "step_size: 1e-50 × step_factor 1.0 is 0.0"),
    ],
)
def test_bad_data_and_settings_exit_2_naming_the_field(flags, field, tmp_path, capsys):
    """A data file or setting refused before anything is written, in one line naming the
    field: each of these crashed in the middle of a run, or (a point at x = 0 with zero
    biases: every run crossed at once; complex: cast to real) trained on wrong data."""
    _write_bad_data(tmp_path)
    out = tmp_path / "never"
    flags = flags.replace("--data-file ", f"--data-file {tmp_path}/").split()  # means --data file
    argv = ["run", *flags, "--widths", "4", "--deltas", "0", "--runs", "2", "--max-checks",
            "1", "--out", str(out), "--quiet"]  # fmt: skip
    err = _refused_in_one_line(argv, out, capsys)
    assert field.format(d=tmp_path) in err, err


def test_a_csv_whose_header_is_numbers_warns(tmp_path):
    """A CSV's first row is its header; numbers there (no header, or pandas' 0,1 for
    unnamed columns) are still taken as the header, with a warning that names the file."""
    from gdrelu.data import load_user_data

    _write_bad_data(tmp_path)
    with pytest.warns(UserWarning, match="no_header.csv: its first row is numbers"):
        x, _ = load_user_data(tmp_path / "no_header.csv")
    np.testing.assert_array_equal(x, [-2, -1, 1, 2, 3])
    (tmp_path / "pandas.csv").write_text("0,1\n0.5,1.0\n-0.5,2.0\n1.5,0.3\n")
    with pytest.warns(UserWarning, match="first row is numbers"):
        assert load_user_data(tmp_path / "pandas.csv")[0].tolist() == [0.5, -0.5, 1.5]


def test_a_point_at_zero_is_taken_with_random_biases(tmp_path):
    """x = 0 is refused only where every initial kink is there (zero biases)."""
    from gdrelu.spec import ExperimentSpec

    _write_bad_data(tmp_path)
    spec = ExperimentSpec(data="file", data_file=str(tmp_path / "zero.csv"), bias_init="unif")
    assert spec.num_points == 5
    small = ExperimentSpec(data="file", data_file=str(tmp_path / "small.csv"))  # 1e-9 in float64
    assert small.num_points == 5


def test_a_split_without_curvature_stops_in_one_line_naming_the_step_size(tmp_path, capsys):
    """Four of five points at x = 1 and two training points: many splits train on one x,
    where the paper's step size is 1/0. Only the draws can tell, so the run directory is
    started, then removed with nothing stored in it: the same command may be given again
    (it stopped with simulate's traceback, and left a run only --resume could open). An
    empty --out the user made stays, empty."""
    (tmp_path / "d.csv").write_text("x,y\n1,1\n1,2\n1,0\n1,1\n2,3\n")
    argv = ["run", "--data-file", str(tmp_path / "d.csv"), "--split", "0.4,0.4,0.2",
            "--widths", "4", "--deltas", "0", "--runs", "20", "--quiet", "--out"]  # fmt: skip
    assert main([*argv, str(tmp_path / "nest" / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("gdrelu: error: step_size: rule 'paper' gives h = inf for run ")
    assert "such runs in its batch" in err[-1]
    assert not (tmp_path / "nest").exists()  # nor the parent it made
    (tmp_path / "mine").mkdir()
    assert main([*argv, str(tmp_path / "mine")]) == 2
    assert list((tmp_path / "mine").iterdir()) == []


def test_a_bad_setting_in_a_later_widths_draws_leaves_nothing_either(tmp_path, monkeypatch, capsys):
    """A review's run on twelve points at two x, split a third each: width 16's draws
    trained and stored its unit, width 32's gave a run one training x (h = 1/0). The
    refusal kept the directory for its unit: --out then said to resume it, and every
    resume failed alike. A new run's units are its own, and go with the rest. (The
    runner stubbed: a unit stored, then the draws' SpecError.)"""
    from gdrelu import runner
    from gdrelu.cli import options
    from gdrelu.spec import SpecError
    from gdrelu.store import UNITS

    out = tmp_path / "o"

    def refused_at_the_second_width(*args, **kwargs):
        (out / UNITS).mkdir(exist_ok=True)
        (out / UNITS / "gd-w16.npz").write_bytes(b"width 16's unit")
        raise SpecError("step_size", "rule 'paper' gives h = inf for run 1 of width 32")

    monkeypatch.setattr(runner, "run_experiment", refused_at_the_second_width)
    monkeypatch.setattr(options, "check_fits", lambda specs, budget, **kw: budget)
    err = _refused_in_one_line(["run", *SMALL, "--out", str(out)], out, capsys)
    assert err == "gdrelu: error: step_size: rule 'paper' gives h = inf for run 1 of width 32"


def test_a_refused_field_names_the_layer_that_set_it_last(tmp_path, capsys):
    """docs: the defaults, then a protocol's fields, then a config file's, then the flags'.
    A refused field is traced to the last layer that set it; a flag's value needs no
    origin. (protocol gd sets max_checks = 1000; the config's 0 lies over it.)"""
    config, out = tmp_path / "exp.toml", tmp_path / "never"
    config.write_text("max_checks = 0\nruns = 0\n")
    argv = ["run", "--protocol", "gd", "--config", str(config), "--out", str(out)]
    err = _refused_in_one_line([*argv, "--runs", "2"], out, capsys)
    assert err.endswith(f"(max_checks is set by --config {config})"), err
    config.write_text("runs = 0\n")
    err = _refused_in_one_line([*argv, "--runs", "0"], out, capsys)
    assert "error: runs: " in err and "is set by" not in err, err


def test_run_flags_and_config_reach_their_own_fields(tmp_path, monkeypatch):
    """--num-train sets num_train (not N); a run's config may set stop_on, which only
    `compare` sets itself; the data set given beside --data-file is not replaced by
    'file' (the pair is refused, naming data_file)."""
    from gdrelu.cli.errors import UsageError
    from gdrelu.cli.options import requested_specs
    from gdrelu.cli.parser import parser

    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text('stop_on = ["crossed"]\n')
    (tmp_path / "d.csv").write_text("x,y\n-2,1\n-1,0\n1,0\n2,1\n")
    specs = requested_specs(parser().parse_args(["run", "--config", "c.toml"]))
    assert [s.stop_on for s in specs] == [("crossed",)]
    argv = ["run", "--data", "p-ex", "--num-train", "64", "--step-size", "0.01"]
    (spec,) = requested_specs(parser().parse_args(argv))
    assert (spec.num_train, spec.num_points, spec.num_samples) == (64, 64, None)
    with pytest.raises(UsageError, match=r"^data_file: is needed exactly when data = 'file'"):
        requested_specs(parser().parse_args(["run", "--data", "star", "--data-file", "d.csv"]))


def test_a_configs_data_file_is_read_beside_the_config(tmp_path, monkeypatch):
    """A relative data_file in a config was read from the working directory, where the
    command happened to run; now from the config's directory (a flag's stays relative to
    the working directory). An empty one read the working directory as a file."""
    from gdrelu.cli.errors import UsageError
    from gdrelu.cli.options import requested_specs
    from gdrelu.cli.parser import parser

    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "c.toml").write_text('data_file = "d.csv"\nstep_size = 0.01\n')
    (tmp_path / "exp" / "d.csv").write_text("x,y\n-2,1\n-1,0\n1,0\n2,1\n")
    (tmp_path / "d.csv").write_text("x,y\n-2,1\n-1,0\n1,0\n")  # the working directory's
    monkeypatch.chdir(tmp_path)
    (spec,) = requested_specs(parser().parse_args(["run", "--config", "exp/c.toml"]))
    assert spec.data_file == str(tmp_path / "exp" / "d.csv") and spec.num_points == 4
    (flag,) = requested_specs(parser().parse_args(["run", "--data-file", "d.csv"]))
    assert flag.data_file == str(tmp_path / "d.csv") and flag.num_points == 3
    (tmp_path / "empty.toml").write_text('data_file = ""\n')
    with pytest.raises(UsageError, match=r"^data_file: an empty path$"):
        requested_specs(parser().parse_args(["run", "--config", "empty.toml"]))


def test_memory_budget_takes_both_ends_of_its_range():
    """--memory-budget GB in [1e-6, 1e9], in bytes (1 GB = 1e9 bytes)."""
    from gdrelu.cli.options import budget_bytes

    assert (budget_bytes(1e-6), budget_bytes(1e9), budget_bytes(None)) == (1000, 10**18, None)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--early-stopping", "yes"], "'yes' is not on or off"),
        (["compare", "--optimizers", "gd,sgd,gd"], "is not a list of two or more distinct names"),
        (["run", "--num-processes", "two"], "--num-processes: invalid int value"),
        (["run", "--process-id", "0.5"], "--process-id: invalid int value"),
    ],
)
def test_the_parser_refuses_a_value_outside_its_flag(argv, message):
    """--early-stopping takes on or off; --optimizers two or more distinct names: anything
    else is refused as it is parsed, before a spec is built."""
    from gdrelu.cli.errors import UsageError
    from gdrelu.cli.parser import parser

    with pytest.raises(UsageError, match=message):
        parser().parse_args(argv)


def test_negative_values_are_values_not_flags(tmp_path, capsys):
    """A flag's value may start with a minus sign, as a list or a limit: --deltas
    -0.1,0.1 and --step-factor -1e-3 parse (the specs judge them), and --memory-budget -inf
    is refused by its own check, naming the value, not as a missing argument."""
    from gdrelu.cli.errors import UsageError
    from gdrelu.cli.options import requested_specs
    from gdrelu.cli.parser import parser

    args = parser().parse_args(["run", "--deltas", "-0.1,0.1", "--step-factor", "-1e-3"])
    assert (args.deltas, args.step_factor) == ((-0.1, 0.1), -1e-3)
    (spec,) = requested_specs(parser().parse_args(["run", "--deltas", "-0.1,0.1"]))
    assert spec.deltas == (-0.1, 0.1)
    out = tmp_path / "refused"
    assert main(["run", "--memory-budget", "-inf", "--out", str(out)]) == 2
    assert "--memory-budget: -inf is not a number of GB" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(UsageError, match="unrecognized arguments: -x"):
        parser().parse_args(["run", "-x"])  # a dash and a letter is still a flag


def test_a_distributed_run_without_a_coordinator_names_the_flag(tmp_path, capsys, monkeypatch):
    """Outside a cluster JAX detects, jax.distributed refuses a missing coordinator in its
    own words (stubbed here as it says them); the line also names --coordinator."""
    import jax

    def initialize(coordinator_address=None, num_processes=None, process_id=None, **kw):
        raise ValueError("coordinator_address should be defined.")

    monkeypatch.setattr(jax.distributed, "initialize", initialize)
    out = tmp_path / "never"
    err = _refused_in_one_line(["run", *SMALL, *DISTRIBUTED, "--out", str(out)], out, capsys)
    assert err.endswith("coordinator_address should be defined; outside a cluster JAX detects "
                        "(SLURM, ...) give --coordinator host:port"), err  # fmt: skip


def test_process_0_of_a_distributed_run_writes_and_names_its_directory_on_ctrl_c(
    tmp_path, monkeypatch, capsys
):
    """--distributed process 0 of 2 (jax.distributed stubbed, training interrupted at
    once) is the writer: it opens the run directory with its manifest, and on Ctrl-C
    exits 130 naming the command that finishes the run, with the memory budget it gave
    (the same budget keeps the results to the bit; the hint left it out)."""
    out = tmp_path / "run"
    argv = ["run", *SMALL, "--out", str(out), "--memory-budget", "2.3456789"]  # every digit
    assert main([*argv, *_as_process(monkeypatch, 0)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    finish = f"gdrelu run --resume {out} --memory-budget 2.3456789"
    assert err[-1] == f"gdrelu: interrupted; finish with: {finish}", err
    assert f"`{finish}` (one process, no --distributed) finishes the run" in err[0], err
    assert (out / "manifest.json").exists()


def test_a_resume_prices_the_cells_its_parts_hold_whole_at_nothing(tmp_path, monkeypatch):
    """Resuming a run whose parts hold every run of width 4's Δ = 0 cell (its unit not
    stored): before anything trains, the bar hears of the batches left, which hold only
    the Δ = 0.1 cell, and of the Δ = 0 cell as finished (the runner stubbed)."""
    import types

    from gdrelu import runner, store
    from gdrelu.cli import run
    from gdrelu.spec import ExperimentSpec

    spec = ExperimentSpec(widths=(4,), deltas=(0.0, 0.1), runs=3)
    zero, tenth = spec.cells()
    piece = (finished_cell(zero, [Status.CROSSED] * 3), np.arange(3))
    store.save_part(tmp_path, [piece], 1.0, ["gd-w4"])
    events = []
    monkeypatch.setattr(runner, "run_experiment", lambda spec, **kw: events.append("train") or [])
    progress = types.SimpleNamespace(
        on_check=print,
        on_cells_done=print,
        on_stored=lambda i, cells: events.append(("stored", i)),
        on_batches=lambda i, batches: events.append(("plan", i, batches)),
        on_forecast=print,
        finished=lambda i, cells: events.append(("finished", i, cells)),
    )
    run._train([spec], progress, processes=None, budget=10**9, out=tmp_path)
    assert events == [("plan", 0, [[tenth]]), ("finished", 0, [(4, 0.0)]), "train"]


def test_a_process_other_than_0_that_finishes_prints_and_writes_nothing(
    tmp_path, monkeypatch, capsys
):
    """--distributed process 1 of 2 (jax.distributed stubbed, the runner stubbed to
    return every run): exit 0 with nothing on stdout (no table), its progress bar off
    and no file written; process 0 alone reports the run."""
    from gdrelu.cli import run

    def finished(spec, **kwargs):
        return [finished_cell(cell, [Status.CROSSED] * spec.runs) for cell in spec.cells()]

    process_1 = _as_process(monkeypatch, 1, run_experiment=finished)
    bars = []
    progress = run.RunProgress
    monkeypatch.setattr(run, "RunProgress", lambda *a, **kw: bars.append(kw) or progress(*a, **kw))
    monkeypatch.chdir(tmp_path)
    loud = [arg for arg in SMALL if arg != "--quiet"]  # the bar off all the same
    assert main(["run", *loud, *process_1]) == 0
    assert capsys.readouterr().out == ""
    assert [kw["enabled"] for kw in bars] == [False]
    assert list(tmp_path.iterdir()) == []


def test_an_unreadable_config_file_exits_2_naming_the_flag(tmp_path, capsys):
    """A --config path that cannot be read (absent, or a directory) is a bad setting:
    one line naming --config, exit code 2, nothing written."""
    out = tmp_path / "never"
    for config in (tmp_path / "absent.toml", tmp_path):
        err = _refused_in_one_line(["run", "--config", str(config), "--out", str(out)], out, capsys)
        assert f"--config: cannot read {config}" in err, err


def test_the_cache_dir_defaults_to_the_variable_of_the_docs(tmp_path, monkeypatch):
    """Without --cache-dir, every command keeps its programs in $GDRELU_CACHE_DIR (else
    $XDG_CACHE_HOME/gdrelu/xla), as the help and README say; the flag wins over both."""
    from pathlib import Path

    from gdrelu.cli.parser import parser

    monkeypatch.setenv("GDRELU_CACHE_DIR", str(tmp_path / "cache"))
    for command in (["run"], ["compare"], ["reproduce"]):
        assert parser().parse_args(command).cache_dir == tmp_path / "cache"
    assert parser().parse_args(["run", "--cache-dir", "mine"]).cache_dir == Path("mine")
    monkeypatch.delenv("GDRELU_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert parser().parse_args(["compare"]).cache_dir == tmp_path / "xdg" / "gdrelu" / "xla"


def test_integer_flags_reach_the_spec_as_integers():
    """--runs, --max-runs, --seed, --check-every, --max-checks and --batch-size are parsed
    as integers: an integer written plainly is taken (a float parse would turn 50 into
    50.0, which the spec refuses)."""
    from gdrelu.cli.options import requested_specs
    from gdrelu.cli.parser import parser

    argv = ["run", "--runs", "10", "--max-runs", "50", "--target-halfwidth", "0.1", "--seed",
            "7", "--check-every", "20", "--max-checks", "30", "--optimizer", "sgd",
            "--batch-size", "16"]  # fmt: skip
    (spec,) = requested_specs(parser().parse_args(argv))
    values = (spec.runs, spec.max_runs, spec.seed, spec.check_every, spec.max_checks)
    assert (*values, spec.batch_size) == (10, 50, 7, 20, 30, 16)
    assert all(type(v) is int for v in values)


def test_compare_checks_each_optimizer_beside_the_results_of_the_earlier_ones(monkeypatch):
    """`check_fits` (memory's check stubbed): in a comparison every optimizer's results
    stay until the end, so each spec is checked with the earlier specs' results held; a
    spec that runs alone (together=False) holds none."""
    from gdrelu import memory
    from gdrelu.cli import options
    from gdrelu.cli.parser import parser

    monkeypatch.setattr(memory, "memory_budget", lambda budget: 10**12)
    seen = []
    monkeypatch.setattr(
        memory, "check_fits", lambda spec, budget, held, lower, as_flags, cells: seen.append(held)
    )
    args = parser().parse_args(["compare", "--optimizers", "gd,sgd,adam", "--widths", "8"])
    specs = options.requested_specs(args)
    assert options.check_fits(specs, None) == 10**12
    first, second = (memory.results_bytes(s) for s in specs[:2])
    assert seen == [0, first, first + second] and first > 0
    seen.clear()
    options.check_fits(specs, None, together=False)
    assert seen == [0, 0, 0]


def test_a_resume_takes_the_kernel_its_run_recorded(tmp_path, monkeypatch, capsys):
    """A run started with --kernel xla resumes under xla without the flag (its kernels
    resolve again, so the manifest check passes) and its hint names it; the variable set
    to another kernel, or --kernel given, still wins and is refused naming the flag that
    resumes. The variable is as it was afterwards."""
    from gdrelu import runner
    from gdrelu.cli import options
    from gdrelu.engine.placement import KERNEL_VARIABLE

    monkeypatch.setattr(runner, "train_cells", _interrupt_at_once)
    monkeypatch.setattr(options, "check_fits", lambda specs, budget, **kw: budget)
    monkeypatch.delenv(KERNEL_VARIABLE, raising=False)
    out = tmp_path / "xla"
    assert main(["run", "--widths", "4", "--runs", "2", "--quiet", "--kernel", "xla",
                 "--out", str(out)]) == 130  # fmt: skip
    capsys.readouterr()
    assert main(["run", "--resume", str(out), "--quiet"]) == 130  # trained: the check passed
    assert f"--resume {out} --kernel xla" in capsys.readouterr().err
    assert KERNEL_VARIABLE not in os.environ
    refused = ": resume with --kernel xla"
    assert main(["run", "--resume", str(out), "--quiet", "--kernel", "interpret"]) == 2
    assert capsys.readouterr().err.strip().endswith(refused)
    monkeypatch.setenv(KERNEL_VARIABLE, "interpret")
    assert main(["run", "--resume", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err.strip().endswith(refused)
    assert os.environ[KERNEL_VARIABLE] == "interpret"
    monkeypatch.setenv(KERNEL_VARIABLE, "")  # empty reads as unset, as the engine reads it
    assert main(["run", "--resume", str(out), "--quiet"]) == 130
    capsys.readouterr()
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["settings"] = {"kernel": "xla"}  # an older gdrelu recorded GD's kernel alone
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert main(["run", "--resume", str(out), "--quiet"]) == 130
    capsys.readouterr()
    # a record this machine cannot run (the GPU kernel) is refused naming the run, not a
    # flag the user did not give, nor advice (--kernel xla) that the record would refuse
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["settings"]["kernels"] = "pallas"
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert main(["run", "--resume", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"gdrelu: error: --resume: {out} was started with kernel 'pallas': ")
    assert "--kernel" not in err and err.endswith("resume it on a machine that runs that kernel")


def test_version_prints_the_installed_distributions(capsys):
    """`gdrelu --version`: the version pip installed (pyproject's), exit 0."""
    from importlib import metadata

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"gdrelu {metadata.version('gdrelu')}\n"


def test_the_docs_config_example_builds_the_spec_they_describe(tmp_path):
    """docs/outputs.md's example file, run with --seed 3: the four cells of 20 runs and at
    most 5 000 steps it says, seed 3 from the flag over the file."""
    from gdrelu.cli.options import requested_specs
    from gdrelu.cli.parser import parser

    text = (Path(__file__).parents[1] / "docs" / "outputs.md").read_text()
    example = text.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "exp.toml").write_text(example)
    argv = ["run", "--config", str(tmp_path / "exp.toml"), "--seed", "3"]
    (spec,) = requested_specs(parser().parse_args(argv))
    assert (spec.widths, spec.deltas, spec.runs, spec.seed) == ((16, 32), (0.0, 0.1), 20, 3)
    steps = spec.check_every * spec.max_checks
    assert (len(spec.cells()), steps, spec.optimizer) == (4, 5000, "gd")


@pytest.mark.parametrize("stored", [False, True, "parts"])
def test_running_out_of_memory_is_a_refusal_that_leaves_nothing_half_written(
    stored, tmp_path, monkeypatch, capsys
):
    """An allocation that fails in training although the memory model admitted the run
    (XLA's RESOURCE_EXHAUSTED, the host's MemoryError) was a traceback with exit code 1,
    and a run directory holding a manifest and nothing else. It is one line naming
    --memory-budget, exit code 2; a new directory without a stored unit is removed, one
    holding units is kept and the line says how to finish it. Nothing trains."""
    from gdrelu import runner
    from gdrelu.cli import options
    from gdrelu.store import PARTS, UNITS

    out = tmp_path / "out"

    def fails(*args, **kwargs):
        if stored == "parts":  # trained batches: kept for a resume with a lower budget
            (out / UNITS / PARTS).mkdir(parents=True, exist_ok=True)
            (out / UNITS / PARTS / "0.npz").write_bytes(b"a trained batch")
            raise MemoryError("Unable to allocate 512. GiB for an array")
        if stored:
            (out / UNITS).mkdir(exist_ok=True)
            (out / UNITS / "w8.npz").write_bytes(b"a stored unit")
            raise MemoryError("Unable to allocate 512. GiB for an array")
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 549764202560 bytes.")

    monkeypatch.setattr(runner, "run_experiment", fails)
    monkeypatch.setattr(options, "check_fits", lambda specs, budget, **kw: budget)
    argv = ["run", *SMALL, "--out", str(out)]
    if not stored:
        err = _refused_in_one_line(argv, out, capsys)
        assert "(RESOURCE_EXHAUSTED: Out of memory allocating 549764202560 bytes.)" in err
    else:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        kept = out / UNITS / ("w8.npz" if stored is True else f"{PARTS}/0.npz")
        assert kept.exists() and (out / "manifest.json").exists()
        assert err.endswith(f"finish with: gdrelu run --resume {out} --memory-budget GB"), err
        assert "(Unable to allocate 512. GiB for an array)" in err
    assert err.startswith("gdrelu: error: --memory-budget: out of memory while training"), err
