"""`gdrelu reproduce` on tiny sizes: the report's files, the paper comparison, resuming."""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import finished_cell, least_budget

from gdrelu import report, reproduce, runner, store
from gdrelu.cells import Cell
from gdrelu.outcome import Status
from gdrelu.reproduce import Sizes


def _pooled_z(crossed, runs, paper_crossed, paper_runs=400):
    """The pooled two-proportion z statistic of `crossed` of `runs` against the paper's
    code's `paper_crossed` of `paper_runs`, worked out here."""
    pooled = (crossed + paper_crossed) / (runs + paper_runs)
    difference = crossed / runs - paper_crossed / paper_runs
    return difference / math.sqrt(pooled * (1 - pooled) * (1 / runs + 1 / paper_runs))


@pytest.fixture
def tiny(monkeypatch):
    """Every experiment at a few runs of one or two small widths, at both scales."""
    figure, variants = Sizes((16,), (0.0, 0.2), 12), Sizes((8,), (0.1,), 6)
    monkeypatch.setitem(reproduce.SIZES, "gd-figure", dict.fromkeys(reproduce.SCALES, figure))
    monkeypatch.setitem(reproduce.SIZES, "variants", dict.fromkeys(reproduce.SCALES, variants))


def test_the_report_compares_with_the_paper_and_embeds_its_figure(tiny, tmp_path):
    """The paper's code crossed 138 of 400 runs at n = 16, Δ = 0 (PAPER.md's table); z is
    the pooled two-proportion statistic, worked out here; the certificate rule's text does
    not say that a crossed run can be stuck (it cannot)."""
    path = reproduce.reproduce(tmp_path, scale="small", only=("gd-figure",))
    text = path.read_text()
    section = json.loads((tmp_path / "gd-figure" / "section.json").read_text())
    (table,) = section["tables"]
    rows = {(r[0], r[1]): r for r in table["rows"]}
    assert rows[16, 0.0][-2] == 138
    assert rows[16, 0.2][-1] == "-"  # no number of the paper's code for Δ = 0.2
    want = _pooled_z(crossed=rows[16, 0.0][3], runs=rows[16, 0.0][2], paper_crossed=138)
    assert float(rows[16, 0.0][-1]) == pytest.approx(want, abs=0.005)  # two decimals
    assert "largest |z|" in text and "![" in text and "gd-figure/gd-figure.png" in text
    assert "Σz² = " in text and "diverged" in table["header"]
    assert "certified or degenerate (so no crossed run is)" in section["paragraphs"][0]
    page = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in page and "<table>" in page


def test_a_finished_experiment_is_not_run_again_and_a_killed_one_resumes(
    tiny, tmp_path, monkeypatch
):
    reproduce.reproduce(tmp_path, scale="small", only=("sgd",))
    trained = []
    original = runner._trained_buckets

    def counting(*args, **kwargs):
        for item in original(*args, **kwargs):
            trained.extend(item[0])
            yield item

    monkeypatch.setattr(runner, "_trained_buckets", counting)
    first = (tmp_path / "report.md").read_text()
    reproduce.reproduce(tmp_path, scale="small", only=("sgd",))
    assert trained == [] and (tmp_path / "report.md").read_text() == first
    (tmp_path / "sgd" / "section.json").unlink()  # killed after its units were stored
    reproduce.reproduce(tmp_path, scale="small", only=("sgd",))
    assert trained == []  # read back from the units, not trained again
    section = json.loads((tmp_path / "sgd" / "section.json").read_text())
    assert section["settings"]["early_stopping"] and section["settings"]["sampler"] == "multinomial"
    assert section["settings"]["stuck_rule"] == "final"  # as applied, not the spec's "auto"
    assert section["seconds"] >= store.stored_seconds(tmp_path / "sgd") > 0  # still counts
    units = sorted(p.name for p in (tmp_path / "sgd" / "units").iterdir())
    assert units and all(name.endswith(".npz") for name in units), units
    saved = tmp_path / "sgd" / "section.json"
    saved.write_text(saved.read_text()[:-10])  # cut (a copy, a full disk): a JSONDecodeError
    with pytest.warns(UserWarning, match="section.json is unreadable .* that section runs again"):
        reproduce.reproduce(tmp_path, scale="small", only=("sgd",))
    assert trained == [] and json.loads(saved.read_text())["settings"]["early_stopping"]


def test_a_reproduction_an_older_gdrelu_started_resumes_from_its_units(tiny, tmp_path, monkeypatch):
    """Older reproductions kept their units in DIR/NAME/units/units/: still read there."""
    reproduce.reproduce(tmp_path, scale="small", only=("sgd",))
    older = tmp_path / "sgd" / "units" / "units"
    older.mkdir()
    for unit in (tmp_path / "sgd" / "units").glob("*.npz"):
        unit.rename(older / unit.name)
    (tmp_path / "sgd" / "section.json").unlink()
    monkeypatch.setattr(runner, "_trained_buckets", lambda *a, **k: pytest.fail("trained"))
    reproduce.reproduce(tmp_path, scale="small", only=("sgd",))
    assert (tmp_path / "sgd" / "section.json").exists()


def test_unknown_experiments_and_scales_are_refused(tmp_path):
    with pytest.raises(ValueError, match="only"):
        reproduce.reproduce(tmp_path, only=("figure-9",))
    with pytest.raises(ValueError, match="scale"):
        reproduce.reproduce(tmp_path, scale="huge")


def test_the_command_runs_resumes_and_refuses_in_one_line(tiny, tmp_path, capsys, monkeypatch):
    """A resume at another scale is refused before the paper scale's estimate, which
    times each path (it took 10 s here before the refusal)."""
    from gdrelu.cli import main

    out = tmp_path / "repro"
    assert main(["reproduce", "--only", "figure-9", "--out", str(out), "--quiet"]) == 2
    assert "--only: figure-9" in capsys.readouterr().err and not out.exists()
    # sgd, as the test above: the same compiled programs (reproduce runs every variant
    # protocol alike; tests/test_protocols.py tests the swapped one's rules)
    assert main(["reproduce", "--only", "sgd", "--out", str(out), "--quiet"]) == 0
    assert (out / "report.html").exists() and (out / "sgd" / "section.json").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["specs"] == [{"reproduce": ["sgd"], "scale": "small"}]
    before = (out / "report.md").read_text()
    assert main(["reproduce", "--resume", str(out), "--quiet"]) == 0  # scale, only: recorded
    assert (out / "report.md").read_text() == before
    capsys.readouterr()
    assert main(["reproduce", "--only", "sgd", "--out", str(out), "--quiet"]) == 2
    assert "already holds results" in capsys.readouterr().err  # finished: no --resume hint

    def timed(scale, names):
        raise AssertionError("the paper scale was timed for a resume that is refused")

    monkeypatch.setattr(reproduce, "estimated_seconds", timed)
    assert main(["reproduce", "--resume", str(out), "--scale", "paper", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("gdrelu: error: --resume: "), err
    # with a budget too small as well, the scale is named, not the budget (a review)
    argv = ["reproduce", "--resume", str(out), "--scale", "paper", "--memory-budget", "5e-6"]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == err


def test_a_budget_too_small_is_refused_before_anything_is_written(tiny, tmp_path, capsys):
    """--memory-budget reaches reproduce: 1 kB is less than one run of width 8 needs. At
    the smallest scale only the budget can change (it said "lower --scale"); at the
    paper's, the message names the flags reproduce has, not run's --widths."""
    from gdrelu.cli import main

    out = tmp_path / "repro"
    command = ["reproduce", "--only", "sgd", "--out", str(out), "--quiet"]
    assert main([*command, "--memory-budget", "1e-6"]) == 2
    err = capsys.readouterr().err
    assert "width 8:" in err and err.endswith("; raise --memory-budget\n"), err
    assert not out.exists()
    assert main([*command, "--scale", "paper", "--memory-budget", "1e-6"]) == 2
    err = capsys.readouterr().err
    assert "; lower --scale (or --only), or raise --memory-budget" in err, err
    assert "--widths" not in err and not out.exists()
    assert main([*command, "--memory-budget", "-1"]) == 2
    assert "--memory-budget" in capsys.readouterr().err and not out.exists()
    section10 = ["reproduce", "--only", "section10", "--out", str(out), "--quiet"]
    assert main([*section10, "--memory-budget", "1e-6"]) == 2  # as the preset is
    assert "width" in capsys.readouterr().err and not out.exists()


def test_experiments_run_one_at_a_time_need_the_budget_one_at_a_time():
    """reproduce and the Section 10 preset train one spec after the other, each with the
    whole budget: a budget that fits each alone is accepted, though not both held at once
    as `compare` holds them."""
    from gdrelu import memory
    from gdrelu.cli import options
    from gdrelu.spec import ExperimentSpec

    spec = ExperimentSpec(widths=(8, 16), deltas=(0.0,), runs=4096)
    budget = least_budget(spec) + memory.results_bytes(spec) // 2
    options.check_fits([spec, spec], budget, together=False)
    with pytest.raises(memory.BudgetError, match="--runs"):
        options.check_fits([spec, spec], budget)
    with pytest.raises(memory.BudgetError, match="lower --scale, or"):
        options.check_fits([spec, spec], budget, lower="--scale")


@pytest.mark.parametrize(
    ("only", "message"),
    [
        ("", "'' has an empty item"),  # each said "is not a list of distinct experiments"
        (",", "',' has an empty item"),
        ("sgd,sgd", "'sgd,sgd' names sgd twice"),
        ("sgd,,adam", "'sgd,,adam' has an empty item"),
    ],
)
def test_only_names_each_experiment_once(only, message, tmp_path, capsys):
    from gdrelu.cli import main

    out = tmp_path / "repro"
    assert main(["reproduce", "--only", only, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gdrelu: error: --only:") and message in err and not out.exists(), err


def test_the_paper_scale_estimate_comes_before_the_directory(tiny, tmp_path, monkeypatch, capsys):
    """At the paper's scale the estimate is printed before anything is written, so a user
    who stops there (Ctrl-C) leaves no directory behind."""
    from gdrelu.cli import main

    out = tmp_path / "repro"

    def estimate(scale, names):
        assert not out.exists(), "the directory was made before the estimate"
        raise KeyboardInterrupt

    monkeypatch.setattr(reproduce, "estimated_seconds", estimate)
    command = ["reproduce", "--only", "sgd", "--scale", "paper", "--out", str(out), "--quiet"]
    assert main(command) == 130
    assert not out.exists()


def test_a_comparison_is_not_resumed_as_a_reproduction(tmp_path, capsys):
    from gdrelu.cli import main

    manifest = {"specs": [{"optimizer": "gd"}, {"optimizer": "sgd"}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert main(["reproduce", "--resume", str(tmp_path), "--quiet"]) == 2
    assert "holds no reproduction" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("recorded", "said"),
    [
        ({"reproduce": ["sgd"]}, "records an unknown scale None"),  # KeyError: 'scale'
        ({"reproduce": ["sgd"], "scale": "huge"}, "records an unknown scale 'huge'"),
        ({"reproduce": 5, "scale": "small"}, "records its experiments out of shape"),
        ({"reproduce": "gd-figure", "scale": "small"}, "records its experiments out of shape"),
    ],
)
def test_a_reproduction_manifest_edited_out_of_shape_is_refused(recorded, said, tmp_path, capsys):
    """Each of these stopped with a KeyError or TypeError traceback (or, for a string,
    with --only's error about 'g,d,-,f,i,g,u,r,e')."""
    from gdrelu.cli import main

    (tmp_path / "manifest.json").write_text(json.dumps({"specs": [recorded]}))
    assert main(["reproduce", "--resume", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"gdrelu: error: --resume: {tmp_path} {said}", err


def test_the_estimate_times_each_general_experiment_at_its_own_rate(monkeypatch):
    """Star at the small scale: 200 runs × 10⁵ steps × 33 points × (16 + 32 + 64) neurons
    on the general path at the rate `general_rate` measures for the star spec; the GD
    figure on the propagator: 400 runs × 3 Δ × 42 000 steps × 6 widths at its rate."""
    rates = {"propagator": 2e-9, "general": 1.0}  # "general": Section 10's, not used here
    monkeypatch.setattr(reproduce, "path_rates", lambda: rates)
    measured = []

    def general_rate(spec):
        measured.append(spec.data)
        return 3e-12 if spec.data == "star" else 0.0

    monkeypatch.setattr(reproduce, "general_rate", general_rate)
    seconds = reproduce.estimated_seconds("small", ("star", "gd-figure"))
    star = 200 * 100_000 * 33 * (16 + 32 + 64) * 3e-12
    figure = 400 * 3 * 42_000 * 6 * 2e-9
    assert seconds == pytest.approx(star + figure, rel=1e-12) and measured == ["star"]


@pytest.mark.slow  # compiles the star programs; the estimate from a rate: the test above
def test_the_general_rate_is_measured_on_the_specs_own_runs():
    """A probe of 8 runs of width 8 on star data (float32, param-norm): some positive
    seconds per neuron-point-step, far below a second."""
    spec = reproduce.ExperimentSpec(
        data="star", widths=(4, 8), deltas=(0.0,), runs=8, step_size="param-norm",
        dtype="float32", stop_on=(), check_every=10, max_checks=1,
    )  # fmt: skip
    rate = reproduce.general_rate(spec)
    assert 0.0 <= rate < 1e-3


def test_the_report_tables_keep_their_columns_and_escape_html(tmp_path):
    """Markdown: a header, a separator of one cell per column (else no table renders) and
    each row's cells in the header's order. HTML: text such as `<0.5` is shown as text,
    not parsed as a tag."""
    from gdrelu import report

    table = report.Table(("width", "delta", "P(stuck)"), [(16, 0.25, "<0.5")])
    section = report.Section("s", "A & B", ["p"], [table], None, {"seed": 0}, 1.0)
    lines = report.markdown("T", [], [section]).splitlines()
    at = lines.index("| width | delta | P(stuck) |")
    assert lines[at + 1] == "|---|---|---|"
    assert lines[at + 2] == "| 16 | 0.25 | <0.5 |"
    page = report.html_page("T", [], [section], tmp_path)
    assert "<td>16</td><td>0.25</td><td>&lt;0.5</td>" in page and "<0.5" not in page
    assert "<h2>A &amp; B</h2>" in page


def test_the_star_table_counts_each_budget_inclusively(tmp_path, monkeypatch):
    """Six runs of width 16 at the small budgets 10⁴, 5·10⁴, 10⁵: a first crossing at
    exactly a budget counts within it, -1 (never) in none; "ended below L_lin" needs the
    final loss below (1 - 10⁻⁶) L_lin, as the escape detector reads it (not just below
    L_lin). The figure plots the loss fractions per budget."""
    drawn = {}
    monkeypatch.setattr(reproduce.plot, "fraction_plot", lambda lines, *a: drawn.update(lines))
    (spec,) = reproduce.experiment_specs("star", "small")
    cell = finished_cell(
        Cell(16, 0.0, spec),
        [Status.UNFINISHED] * 6,
        pattern_change_step=[-1, 0, 10_000, 10_001, 100_000, 100_001],
        loss_below_step=[-1, -1, 5, 50_000, 50_001, -1],
        final_loss=[0.5, 1.0 - 0.5e-6, 1.0, 2.0, 0.9, 1.0 - 2e-6],
        linear_threshold=np.ones(6),
    )
    section = reproduce._star_section([cell], spec, "small", tmp_path, 1.0)
    (row,) = section.tables[0].rows
    assert row[:2] == (16, 6)
    fractions = [float(interval.split()[0]) for interval in row[2:]]
    # (changed, below) per budget, then ended below: counted by hand from the arrays
    counts = [2, 1, 3, 2, 4, 3, 3]
    assert fractions == pytest.approx([round(k / 6, 3) for k in counts])
    assert drawn == {10_000: [(16, 1, 6)], 50_000: [(16, 2, 6)], 100_000: [(16, 3, 6)]}


def test_the_verdict_reads_the_largest_z_in_absolute_value(tmp_path):
    """n = 16 crossed 138 of 400 as the paper's code did (z = 0); n = 32 crossed none where
    the paper's code crossed 97: z is far below -3, so the two disagree."""
    (spec,) = reproduce.experiment_specs("gd-figure", "small")
    cells = [
        finished_cell(Cell(16, 0.0, spec), [Status.CROSSED] * 138 + [Status.STUCK] * 262),
        finished_cell(Cell(32, 0.0, spec), [Status.STUCK] * 400),
    ]
    section = reproduce._stuck_section("gd-figure", "t", cells, spec, tmp_path, 1.0, True)
    z = _pooled_z(crossed=0, runs=400, paper_crossed=97)
    text = section.paragraphs[-1]
    assert f"the largest |z| is {abs(z):.2f}, so the two disagree: beyond 3 standard" in text
    from scipy.stats import chi2, norm

    assert chi2.sf(z * z, 2) < 1e-20  # printed in 3 digits, not as 0.00
    assert f"Σz² = {z * z:.2f} over 2 cells (p = {chi2.sf(z * z, 2):.3g} under χ²" in text
    shift = (0.0 + z) / np.sqrt(2)
    assert f"Stouffer's Σz/√2 = {shift:+.2f} (p = {2 * norm.sf(abs(shift)):.3g})" in text
    assert (tmp_path / "gd-figure.png").exists()


def test_a_progress_line_names_the_batchs_widths_as_the_run_bar_does(tmp_path, monkeypatch):
    """`run_experiment` reports a batch's widths as a tuple; the line said "n=(16,)"."""
    lines = []

    def run_experiment(spec, *, on_check, **settings):
        on_check((16, 32), 1, np.zeros(4, np.int8))
        raise StopIteration  # the line is all this test needs

    monkeypatch.setattr(reproduce, "run_experiment", run_experiment)
    with pytest.raises(StopIteration):
        reproduce.run_one("sgd", "small", tmp_path, lines.append)
    assert lines == ["sgd n=16,32 check 1"]


def test_the_files_of_a_reproduction_are_renamed_into_place(tmp_path, monkeypatch):
    """section.json marks an experiment finished: half-written (a kill, a full disk), it
    would be discarded and the experiment run again, so it is written to a temporary file
    and renamed, as the reports are (`atomic.write_text`)."""

    def run_one(name, scale, directory, on_progress, memory_budget=None):
        (directory / "sgd.png").write_bytes(b"\x89PNG")
        return report.Section(name, "t", ["p"], [], "sgd.png", {}, 1.0)

    monkeypatch.setattr(reproduce, "run_one", run_one)
    renamed, replace = [], os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (renamed.append(Path(b)), replace(a, b)))
    reproduce.reproduce(tmp_path, only=("sgd",))
    assert renamed == [tmp_path / "sgd" / "section.json", tmp_path / "report.md",
                       tmp_path / "report.html"]  # fmt: skip


def test_a_resume_keeps_the_paper_scale_it_was_started_at(tmp_path, monkeypatch, capsys):
    """`--resume DIR` without --scale runs at the scale DIR's manifest records (the
    paper's here, with its estimate printed first), and its experiments."""
    from gdrelu.cli import main

    calls = []

    def run(out, *, scale, only, on_progress, memory_budget):
        calls.append((scale, only))
        return out / "report.md"

    monkeypatch.setattr(reproduce, "estimated_seconds", lambda scale, names: 3600.0)
    monkeypatch.setattr(reproduce, "reproduce", run)
    out = tmp_path / "repro"
    assert main(["reproduce", "--only", "sgd", "--scale", "paper", "--out", str(out)]) == 0
    assert main(["reproduce", "--resume", str(out), "--quiet"]) == 0
    assert calls == [("paper", ("sgd",))] * 2
    assert capsys.readouterr().err.count("the paper's scale needs at most about 1.0 h") == 2


def test_the_section10_estimate_counts_every_run_of_the_tiny_grid():
    """The small reproduction's Section 10 grid (docs/theory.md): P_ex at d = 1 and P_d at
    d = 1, 2, He, SGD and Adam: 6 groups, each of 7 bias inits × 2 step sizes × 10 runs,
    256 steps each (256·d points a run, 256/d epochs, batches of 256), width 32."""
    assert reproduce.estimated_work("small", ("section10",)) == {
        "section10": ("general", 6 * 7 * 2 * 10 * 256 * 32 * 256)
    }


def test_the_stuck_table_counts_each_status_under_its_own_column():
    """Each count stands under the header that names its status: 3 crossed, 1 early
    stopped, 2 unfinished, 4 diverged and 5 stuck of 15 runs (distinct counts, so a
    column swapped with another shows); the rows follow the cells' order."""
    (spec,) = reproduce.experiment_specs("gd-figure", "small")
    status = ([Status.CROSSED] * 3 + [Status.EARLY_STOPPED] + [Status.UNFINISHED] * 2
              + [Status.DIVERGED] * 4 + [Status.STUCK] * 5)  # fmt: skip
    cells = [finished_cell(Cell(w, 0.0, spec), status[:k]) for w, k in ((128, 15), (256, 3))]
    table, zs = reproduce._stuck_table(cells, True)
    row, other = table.rows  # in the cells' order
    assert other[:4] == (256, 0.0, 3, 3)
    got = dict(zip(table.header, row, strict=True))
    assert (got["width"], got["runs"], got["crossed"]) == (128, 15, 3)
    assert (got["early stopped"], got["unfinished"], got["diverged"]) == (1, 2, 4)
    assert got["stuck (by the rule)"] == 5 and got["P(stuck) [95% CI]"].startswith("0.333 [")
    assert got["paper's code: crossed/400"] == got["z"] == "-" and zs == []  # none at 128


def test_a_z_within_three_standard_errors_agrees_and_its_sign_says_which_is_larger(tmp_path):
    """n = 16, Δ = 0 crossed 173 of 400 where the paper's code crossed 138: z = +2.54
    (ours the larger), within `AGREEMENT_Z` = 3 standard errors of the pooled binomial
    null, so the two agree; the table shows the signed z."""
    (spec,) = reproduce.experiment_specs("gd-figure", "small")
    cell = finished_cell(Cell(16, 0.0, spec), [Status.CROSSED] * 173 + [Status.STUCK] * 227)
    section = reproduce._stuck_section("gd-figure", "t", [cell], spec, tmp_path, 1.0, True)
    z = _pooled_z(crossed=173, runs=400, paper_crossed=138)
    assert 2.5 < z < reproduce.AGREEMENT_Z == 3.0
    assert (
        f"the largest |z| is {z:.2f}, so the two agree: within 3 standard" in section.paragraphs[-1]
    )
    (row,) = section.tables[0].rows
    assert row[-2:] == (138, f"{z:+.2f}") and row[-1].startswith("+")


def test_the_star_experiment_at_the_papers_scale_is_the_paper_codes():
    """docs/fidelity.md ("Star data"): widths 128-8192 with 1000 runs, h = 2/‖θ‖² (the star
    code's step applied twice), float32, no stopping, and step budgets 10⁵, 2·10⁵, 5·10⁵ and
    10⁶, the last the run's whole budget."""
    (spec,) = reproduce.experiment_specs("star", "paper")
    assert spec.widths == (128, 256, 512, 1024, 2048, 4096, 8192) and spec.runs == 1000
    assert (spec.step_size, spec.step_factor, spec.dtype) == ("param-norm", 2.0, "float32")
    assert spec.stop_on == () and spec.data == "star"
    assert reproduce.STAR_BUDGETS["paper"] == (100_000, 200_000, 500_000, 1_000_000)
    assert spec.check_every * spec.max_checks == 10**6


def test_progress_in_a_log_is_a_line_per_log_interval(tmp_path, monkeypatch, capsys):
    """With stderr no terminal (a batch job's log), the reproduction's progress is not a
    line redrawn with carriage returns at every check: the first state at once, then one
    line per `progress.LOG_SECONDS`, each ending in a newline."""
    from gdrelu.cli import main, progress

    def run(out, *, scale, only, on_progress, memory_budget):
        for k in range(5):
            on_progress(f"sgd n=16 check {k}")
        return out / "report.md"

    monkeypatch.setattr(reproduce, "reproduce", run)
    assert main(["reproduce", "--only", "sgd", "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and err.count("check") == 1 and "check 0\n" in err, err
    monkeypatch.setattr(progress, "LOG_SECONDS", 0.0)
    assert main(["reproduce", "--only", "sgd", "--out", str(tmp_path / "b")]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "check" in line]
    assert [line.split(" s  ", 1)[1] for line in lines] == [f"sgd n=16 check {k}" for k in range(5)]


@pytest.mark.parametrize("section", ["gd-figure", "star"])
def test_a_figure_that_fails_partway_leaves_no_file(section, tmp_path, monkeypatch):
    """The reproduction's figures were saved in place: a kill while one was drawn left a
    truncated PNG under its final name, which a resume kept (its section was stored). They
    go through `atomic.write_figure` now, as `gdrelu run`'s do: a draw that fails after
    writing some bytes leaves nothing."""
    from gdrelu import plot

    def partway(*args):
        (target,) = [a for a in args if isinstance(a, Path) or hasattr(a, "write")]
        (target.write_bytes if isinstance(target, Path) else target.write)(b"half a PNG")
        raise RuntimeError("killed while drawing")

    (spec,) = reproduce.experiment_specs(section, "small")
    cells = [finished_cell(Cell(16, 0.0, spec), [Status.STUCK] * 4)]
    with pytest.raises(RuntimeError, match="killed while drawing"):
        if section == "gd-figure":
            monkeypatch.setattr(plot, "failure_probability_plot", partway)
            reproduce._stuck_section(section, "t", cells, spec, tmp_path, 1.0, False)
        else:
            monkeypatch.setattr(plot, "fraction_plot", partway)
            reproduce._star_section(cells, spec, "small", tmp_path, 1.0)
    assert list(tmp_path.iterdir()) == []
