"""The scripts and benchmarks run: each answers --help, and the ones a doc tells a reader
to run start and finish on a tiny workload (bench_star crashed at start-up for a day
without a test noticing). Slow: each is a fresh Python process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gdrelu.engine.placement import BLOCK

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(
    p.relative_to(ROOT) for d in ("scripts", "benchmarks") for p in (ROOT / d).glob("*.py")
)


def _run(args, tmp_path, timeout=240):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GDRELU_CACHE_DIR": str(tmp_path / "xla")}
    return subprocess.run(
        [sys.executable, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=str)
def test_each_script_answers_help(script, tmp_path):
    done = _run([script, "--help"], tmp_path)
    assert done.returncode == 0 and "usage:" in done.stdout, done.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["benchmarks/bench_star.py", "--widths", "16,32", "--runs", "4", "--work", "2000",
         "--repeats", "1"],
        ["benchmarks/bench_engine.py", "--paths", "general", "--no-numpy", "--widths", "16",
         "--neurons", "64", "--steps", "1000", "--repeats", "1", "--dtypes", "float64"],
        ["scripts/star_experiment.py", "--widths", "4", "--runs", "4", "--steps", "2000",
         "--out", "{tmp}/star"],
        ["scripts/star_experiment.py", "--widths", "4", "--runs", "4", "--steps", "2000",
         "--step-size", "param-norm", "--step-factor", "2", "--out", "{tmp}/star"],
        ["scripts/adam_sensitivity.py"],
        ["benchmarks/bench_compare_floor.py", "--runs", str(BLOCK * (os.cpu_count() or 1)),
         "--steps", "10"],
        ["benchmarks/bench_general_loop.py", "--widths", "4", "--lanes", "16", "--steps", "5"],
        ["benchmarks/bench_call_parts.py", "--optimizer", "sgd", "--width", "4", "--runs",
         "16", "--steps", "40", "--check-every", "20", "--calls", "1"],
        ["scripts/profile_suite.py", "--out", "{tmp}/profile", "--top", "3", "--", "-q",
         "-n", "0", "-p", "no:cacheprovider", "tests/test_model.py"],
        ["benchmarks/bench_eta.py", "--record", "{tmp}/calls.json", "--plot", "{tmp}/eta.png",
         "--", "run", "--widths",
         "4,8", "--runs", "4", "--max-checks", "3", "--check-every", "10", "--out",
         "{tmp}/eta", "--quiet"],
    ],
    ids=lambda args: Path(args[0]).name,
)  # fmt: skip
def test_scripts_the_docs_name_run_on_a_tiny_workload(args, tmp_path):
    done = _run([a.format(tmp=tmp_path) for a in args], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    if args[0] == "benchmarks/bench_compare_floor.py":  # a bound for every width, summed
        assert done.stdout.count("\n| ") == 6 and "| all |" in done.stdout, done.stdout
    if args[0] == "benchmarks/bench_general_loop.py":  # a rate for every optimizer
        assert done.stdout.count("\n| ") == 6, done.stdout
    if args[0] == "benchmarks/bench_call_parts.py":  # the chunks, the rest and the whole
        for row in ("\n| chunk: propagator |", "\n| the rest |", "\n| **whole (wrapped)** |"):
            assert row in done.stdout, done.stdout
    if args[0] == "scripts/star_experiment.py":  # the step rule the title names
        title = (tmp_path / "star" / "star.md").read_text().splitlines()[0]
        assert ("step 2/‖θ‖²" if "param-norm" in args else "step 1/λ_max(K_w)") in title, title
    if args[0] == "benchmarks/bench_eta.py":  # the ETA at each twentieth of the run
        assert done.stdout.count("\n| ") == 1 + 19 and (tmp_path / "calls.json").exists()
        assert (tmp_path / "eta.png").read_bytes().startswith(b"\x89PNG")
        again = _run(["benchmarks/bench_eta.py", "--calls", tmp_path / "calls.json"], tmp_path)
        assert again.stdout in done.stdout  # the replay of the recording, as run
    if args[0] == "scripts/profile_suite.py":  # the tests' programs, named and timed
        assert "tests/test_model.py::" in done.stdout and " jit(" in done.stdout, done.stdout


def test_device_check_keeps_a_folder_that_holds_files(tmp_path):
    """scripts/device_check.sh packs and removes every file in $OUT at its end: a folder
    that already holds files is refused (exit 2) and left as it was; an empty one gets the
    log and the archive (here of no stage but an unknown one: exit 1, one failure)."""
    held = tmp_path / "held"
    held.mkdir()
    (held / "notes.txt").write_text("keep")
    env = {**os.environ, "PYTHON": sys.executable}
    script = str(ROOT / "scripts" / "device_check.sh")

    def call(out):
        env["OUT"] = str(out)
        return subprocess.run(["bash", script, "nostage"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    done = call(held)
    assert done.returncode == 2 and "not empty" in done.stderr, done.stderr
    assert sorted(p.name for p in held.iterdir()) == ["notes.txt"]
    done = call(tmp_path / "new")
    assert done.returncode == 1, done.stderr
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["log.txt", "results.tar.gz"]
    assert "unknown stage nostage" in (tmp_path / "new" / "log.txt").read_text()


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["--widths", "x"], "--widths: 'x' is not"),
        (["--runs", "0"], "runs: 0 is not"),
        (["--check-every", "0"], "--check-every: 0 is not positive"),
    ],
)
def test_star_experiment_refuses_bad_flags_by_name(args, message, tmp_path):
    done = _run(["scripts/star_experiment.py", *args, "--out", tmp_path / "star"], tmp_path)
    assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "star").exists()


def test_the_eta_benchmark_counts_the_time_each_estimate_was_shown():
    """An ETA is shown from its check to the next: right (within 1.5×) for 1 s, 10 s
    where 3 were left for 1 s, then right for the last 2 s: 3 of the run's 4 s."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_eta", ROOT / "benchmarks/bench_eta.py")
    bench_eta = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_eta)
    rows = [(at, None, {"now": (eta, False)}) for at, eta in [(0, 4.0), (1, 10.0), (2, 2.5)]]
    assert bench_eta.within(rows, 4.0, "now") == pytest.approx(3 / 4)


def test_the_eta_benchmark_replays_an_int_width_and_skips_checks_with_no_estimate():
    """The Section 10 preset names a batch's width as an int; a check that advanced no
    unfinished cell leaves the clock without an estimate, and is not a row."""
    import importlib.util

    from gdrelu import progress

    spec = importlib.util.spec_from_file_location("bench_eta", ROOT / "benchmarks/bench_eta.py")
    bench_eta = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_eta)
    calls = [
        [0.0, "__init__", [[2], [False], [[[8, 0.0], [16, 0.0]]]]],
        [0.0, "start", []],
        [0.0, "cell_done", [0, [8, 0.0]]],
        [1.0, "on_check", [0, 8, 1]],
        [2.0, "on_check", [0, 16, 1]],
        [3.0, "on_check", [0, 16, 2]],
        [3.5, "end", []],
    ]
    rows = bench_eta.replay(calls, {"now": progress})
    assert [row[1][1] for row in rows] == [16, 16]
    assert "| spec 0, width 16, check 2 | 0.5 |" in bench_eta.table(rows, calls[-1][0])
