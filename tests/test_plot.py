"""The figures draw what the summary says: each cell's interval, at its width."""

import os

import numpy as np
import pytest

from gdrelu import plot
from gdrelu.plot import comparison_figure, failure_probability_figure

PAIR = {"a": "gd", "b": "adam", "width": 16, "delta": 0.1, "difference": 0.2,
        "ci95": [0.05, 0.4]}  # fmt: skip


def _marked(ax, marker: str) -> list:
    """The lines of `ax` that mark points (not the legend's empty stand-ins): open markers
    ("white") or crosses ("x")."""
    if marker == "white":
        return [line for line in ax.lines
                if line.get_markerfacecolor() == "white" and len(line.get_xdata())]  # fmt: skip
    return [line for line in ax.lines if line.get_marker() == marker and len(line.get_xdata())]


def _cell(width, delta, p, low, high):
    return {"width": width, "delta": delta, "p_stuck": p, "ci95": [low, high],
            "stuck_rule": "final", "optimizer": "sgd"}  # fmt: skip


@pytest.fixture(autouse=True)
def _close_all():
    """Each test's figures closed after it (more than 20 open make matplotlib warn)."""
    yield
    plot.plt.close("all")


@pytest.fixture
def closed_figures(monkeypatch):
    """The figures a plot closes (`plt.close` recorded instead), in order."""
    figures = []
    monkeypatch.setattr(plot.plt, "close", figures.append)
    return figures


def test_each_cell_has_its_interval_even_alone():
    """One width gave a point without its interval (a band over one x has no area)."""
    cells = [_cell(16, 0.0, 0.75, 0.51, 0.91), _cell(16, 0.1, 0.5, 0.3, 0.7)]
    fig = failure_probability_figure(cells)
    (ax,) = fig.axes
    spans = []
    for container in ax.containers:
        (segments,) = container.lines[2]
        spans += [tuple(seg[:, 1]) for seg in segments.get_segments()]
    np.testing.assert_allclose(sorted(spans), [(0.3, 0.7), (0.51, 0.91)])
    assert ax.get_ylabel() == "P(stuck)"


def test_a_comparison_figure_says_when_its_intervals_are_nominal():
    """Its bars span each pair's interval, and a --target-halfwidth comparison's title says
    the intervals are nominal, as the printed lines and summary.json do."""
    for nominal in (False, True):
        fig = comparison_figure([{**PAIR, "ci95_nominal": True} if nominal else PAIR])
        (segments,) = fig.axes[0].containers[0].lines[2]
        np.testing.assert_allclose(segments.get_segments()[0][:, 1], (0.05, 0.4))
        assert ("nominal: --target-halfwidth" in fig._suptitle.get_text()) == nominal


def test_the_lines_go_by_width_with_their_bands_and_say_their_optimizer():
    """Cells given out of width order are drawn left to right; each band spans the cells'
    intervals, not p to the upper end; with two optimizers each label names its own."""
    cells = [_cell(64, 0.1, 0.2, 0.1, 0.3), _cell(16, 0.1, 0.6, 0.4, 0.8),
             _cell(32, 0.1, 0.5, 0.35, 0.65)]  # fmt: skip
    (ax,) = failure_probability_figure(cells).axes
    (bars,) = ax.containers
    np.testing.assert_array_equal(bars.lines[0].get_xdata(), [16, 32, 64])
    np.testing.assert_allclose(bars.lines[0].get_ydata(), [0.6, 0.5, 0.2])
    (band,) = ax.collections[-1:]
    y = band.get_paths()[0].vertices[:, 1]
    assert (y.min(), y.max()) == (0.1, 0.8)
    assert ax.get_legend_handles_labels()[1] == ["Δ = 0.1"]
    adam = [{**c, "optimizer": "adam"} for c in cells]
    (ax,) = failure_probability_figure(cells + adam).axes
    assert ax.get_legend_handles_labels()[1] == ["sgd, Δ = 0.1", "adam, Δ = 0.1"]


def test_the_axis_says_provably_only_when_every_cell_counts_certified_runs():
    """GD's certificate proves a run stuck, the final-network rule does not: one cell of
    the final rule among certificate cells makes the label plain P(stuck); an interval of
    --target-halfwidth is marked nominal in the title."""
    certified = {**_cell(16, 0.0, 0.5, 0.3, 0.7), "stuck_rule": "certificate"}
    (ax,) = failure_probability_figure([certified]).axes
    assert ax.get_ylabel() == "P(provably stuck)" and "nominal" not in ax.get_title()
    # the title names the axis' quantity (it said P(stuck) over a P(provably stuck) axis)
    assert ax.get_title().splitlines()[-1] == "P(provably stuck), 95% Clopper-Pearson"
    (ax,) = failure_probability_figure([certified, _cell(32, 0.0, 0.5, 0.3, 0.7)]).axes
    assert ax.get_ylabel() == "P(stuck)"
    assert ax.get_title().splitlines()[-2:] == [
        "stuck = certified or degenerate; final loss not below L_lin",
        "P(stuck), 95% Clopper-Pearson",
    ]
    (ax,) = failure_probability_figure([{**certified, "ci95_nominal": True}]).axes
    assert "(nominal: --target-halfwidth)" in ax.get_title()


def test_a_comparisons_figure_says_what_stuck_counts_for_each_optimizer_and_how_many_runs():
    """`run` counts GD's runs by the certificate, `compare` by the final network: the
    same runs read 0.300 in `run` and 0.575 in `compare` (GD at n = 8), and no figure said
    why, nor how many runs a cell holds; GD and Adam at one Δ were drawn in one colour,
    their bands alike, and titled "GD, ADAM". Cells of both rules (results of a `run` and
    a `compare` drawn together) name each optimizer's."""
    gd = {**_cell(16, 0.0, 0.3, 0.2, 0.4), "optimizer": "gd", "stuck_rule": "certificate",
          "runs": 60}  # fmt: skip
    adam = {**_cell(16, 0.0, 0.6, 0.5, 0.7), "optimizer": "adam", "runs": 120}
    (ax,) = failure_probability_figure([gd, adam]).axes
    title = ax.get_title().splitlines()
    assert title[0] == "GD, Adam on two-layer ReLU nets:"
    assert title[-2:] == [
        "stuck = gd: certified or degenerate; adam: final loss not below L_lin",
        "P(stuck), 95% Clopper-Pearson, 60-120 runs per cell",
    ]
    colours = [c.lines[0].get_color() for c in ax.containers]
    assert len(set(colours)) == 2
    (ax,) = failure_probability_figure([{**adam, "runs": 40}]).axes
    assert ax.get_title().splitlines()[-2:] == [
        "stuck = final loss not below L_lin",
        "P(stuck), 95% Clopper-Pearson, 40 runs per cell",
    ]


def test_the_fraction_plot_draws_each_budget_by_width(tmp_path, closed_figures):
    """The star figure: one line per step budget, in budget order, its points sorted by
    width whatever order they came in, set a little apart at a shared width, each with its
    95% exact interval as a bar (it drew none, beside a table of intervals), and the title
    given; the file is written."""
    from scipy.stats import binomtest

    lines = {50_000: [(64, 18, 20), (16, 10, 20)],
             10_000: [(32, 6, 20), (16, 2, 20), (64, 8, 20)]}  # fmt: skip
    plot.fraction_plot(lines, "fraction below", tmp_path / "star.png", "data star")
    (ax,) = closed_figures[0].axes
    first, second = (container.lines[0] for container in ax.containers)
    assert ax.get_legend_handles_labels()[1] == ["≤ 10000 steps", "≤ 50000 steps"]
    np.testing.assert_allclose(np.log2(first.get_xdata() / [16, 32, 64]), -0.02)
    np.testing.assert_allclose(first.get_ydata(), [0.1, 0.3, 0.4])
    np.testing.assert_allclose(np.log2(second.get_xdata() / [16, 64]), 0.02)
    (segments,) = ax.containers[0].lines[2]
    for (k, n), segment in zip([(2, 20), (6, 20), (8, 20)], segments.get_segments(), strict=True):
        ci = binomtest(k, n).proportion_ci(0.95, "exact")
        np.testing.assert_allclose(segment[:, 1], [ci.low, ci.high], atol=1e-12)
    assert ax.get_ylabel() == "fraction below" and ax.get_xscale() == "log"
    assert ax.get_title().splitlines() == ["data star", "95% Clopper-Pearson"]
    assert (tmp_path / "star.png").read_bytes()[:4] == b"\x89PNG"


def test_an_optimizer_without_a_delta_is_drawn_without_it():
    """gd at Δ = 0 and sgd at Δ = 0.1 only: each draws its own line (an empty row raised
    'not enough values to unpack')."""
    gd = {**_cell(16, 0.0, 0.5, 0.3, 0.7), "optimizer": "gd"}
    (ax,) = failure_probability_figure([gd, _cell(16, 0.1, 0.6, 0.4, 0.8)]).axes
    assert ax.get_legend_handles_labels()[1] == ["gd, Δ = 0", "sgd, Δ = 0.1"]


def test_section_10_marks_a_configuration_whose_runs_all_diverged(tmp_path, closed_figures):
    """A log axis drops an infinite relative RMSE without a word: d = 2's diverged row is
    an × at the panel's top, at d = 2, in its bias init's colour."""
    row = dict(data="radial", init="he", optimizer="sgd", bias_init="zero")
    best = [{**row, "dim": 1, "relative_test_rmse": 1.0},
            {**row, "dim": 2, "relative_test_rmse": float("inf")},
            {**row, "dim": 4, "relative_test_rmse": 1.5}]  # fmt: skip
    plot.relative_rmse_plot(best, tmp_path / "s10.png")
    (ax,) = closed_figures[0].axes
    line = ax.containers[0].lines[0]
    (crosses,) = [line for line in ax.lines if line.get_marker() == "x"]
    assert line.get_color() == crosses.get_color()
    np.testing.assert_array_equal(crosses.get_xdata(), [2])
    assert crosses.get_transform() != line.get_transform()  # y in axes fractions: the top


def test_the_failure_figure_is_a_probability_against_log_2_width_in_delta_order():
    """One line per Δ in increasing Δ (cells given Δ = 0.5 first), P(stuck) on [0, 1]
    against width on a log-2 axis, the title naming the optimizer; one cell of
    --target-halfwidth among others makes the title say nominal."""
    cells = [_cell(16, 0.5, 0.2, 0.1, 0.3), _cell(16, 0.0, 0.6, 0.4, 0.8)]
    (ax,) = failure_probability_figure(cells).axes
    assert ax.get_legend_handles_labels()[1] == ["Δ = 0", "Δ = 0.5"]
    assert ax.get_ylim() == (-0.03, 1.03) and ax.xaxis.get_transform().base == 2
    assert ax.get_title().startswith("SGD on") and "nominal" not in ax.get_title()
    (ax,) = failure_probability_figure([cells[0], {**cells[1], "ci95_nominal": True}]).axes
    assert "(nominal: --target-halfwidth)" in ax.get_title()


def test_every_line_of_a_four_optimizer_figure_is_told_apart_at_plain_widths():
    """Four optimizers × three Δ took matplotlib's ten colours in turn: "adam, Δ = 0.01"
    drew as "gd, Δ = 0" did. A colour per optimizer, a marker and line style per Δ make
    each line its own; the widths are ticked as 24 and 100, not 2⁴; a cell at P = 0 or 1
    lies inside the frame, not half under it; the twelve-line legend sits outside."""
    cells = [{**_cell(w, d, p, max(p - 0.1, 0.0), min(p + 0.1, 1.0)), "optimizer": o}
             for o in ("gd", "sgd", "momentum", "adam") for d in (0.0, 0.01, 0.1)
             for w, p in ((24, 0.0), (100, 1.0))]  # fmt: skip
    (ax,) = failure_probability_figure(cells).axes
    looks = {(c.lines[0].get_color(), c.lines[0].get_marker(), c.lines[0].get_linestyle())
             for c in ax.containers}  # fmt: skip
    assert len(ax.containers) == 12 and len(looks) == 12
    assert [t.get_text() for t in ax.get_xticklabels()] == ["24", "100"]
    low, high = ax.get_ylim()
    assert low < 0.0 and high > 1.0
    assert ax.get_legend().get_bbox_to_anchor().x0 > ax.get_window_extent().x1 - 1


def test_a_comparison_figure_has_one_panel_per_delta_its_rows_by_width():
    """Paired differences against width, one panel per Δ holding only its Δ's pairs, drawn
    left to right; one nominal pair among others makes the title say nominal."""
    pair = {"a": "gd", "b": "adam", "ci95": [-0.5, 0.5]}
    rows = [
        {**pair, "width": 32, "delta": 0.0, "difference": 0.3},
        {**pair, "width": 16, "delta": 0.0, "difference": 0.1},
        {**pair, "width": 16, "delta": 0.1, "difference": -0.2, "ci95_nominal": True},
    ]
    fig = comparison_figure(rows)
    assert [ax.get_title() for ax in fig.axes] == ["Δ = 0", "Δ = 0.1"]
    expected = (([16, 32], [0.1, 0.3]), ([16], [-0.2]))
    for ax, (widths, differences) in zip(fig.axes, expected, strict=True):
        (bars,) = ax.containers
        np.testing.assert_array_equal(bars.lines[0].get_xdata(), widths)
        np.testing.assert_allclose(np.asarray(bars.lines[0].get_ydata(), float), differences)
    assert "nominal: --target-halfwidth" in fig._suptitle.get_text()


def test_a_comparison_figure_says_the_sign_and_tells_its_pairs_apart_by_marker():
    """The axis said "P(stuck) difference (paired)", the sign only in the legend, and every
    pair drew circles in a colour of its own alone (red and green for the third and
    fourth)."""
    (ax,) = comparison_figure([PAIR]).axes
    assert ax.get_ylabel() == "P(stuck | gd) − P(stuck | adam)"
    cells = [{**_cell(16, 0.1, 0.5, 0.3, 0.7), "optimizer": o, "stuck_rule": rule}
             for o, rule in (("gd", "certificate"), ("adam", "final"))]  # fmt: skip
    title = comparison_figure([PAIR], "", cells)._suptitle.get_text()
    assert (
        title.splitlines()[-1]
        == "stuck = gd: certified or degenerate; adam: final loss not below L_lin"
    )
    rows = [{**PAIR, "a": a, "b": b} for a, b in (("gd", "adam"), ("gd", "sgd"), ("sgd", "adam"))]
    (ax,) = comparison_figure(rows).axes
    assert ax.get_ylabel() == "P_a(stuck) − P_b(stuck), paired"
    looks = [(c.lines[0].get_marker(), c.lines[0].get_color()) for c in ax.containers]
    assert len({marker for marker, _ in looks}) == 3 and len(set(looks)) == 3


def test_section_10_draws_p_d_in_circles_by_d_and_p_ex_in_squares(tmp_path, closed_figures):
    """One colour per bias init, P_d as circles joined in order of d (rows given out of
    order), P_ex at d = 1 as a lone square, labelled once per bias init (on P_d); an
    undefined (NaN) relative RMSE is marked × as a diverged one is; a log y-axis only
    where some value is finite and positive (all diverged: linear, the × marks alone)."""
    keys = ("data", "bias_init", "dim", "relative_test_rmse")
    best = [
        {"init": "he", "optimizer": "sgd", **dict(zip(keys, values, strict=True))}
        for values in [("radial", "zero", 4, 1.5), ("radial", "zero", 1, 1.0),
                       ("radial", "zero", 2, np.nan), ("radial", "unif", 2, 1.2),
                       ("radial", "unif", 1, 1.1), ("p-ex", "zero", 1, 1.3)]
    ]  # fmt: skip
    plot.relative_rmse_plot(best, tmp_path / "s10.png")
    (ax,) = closed_figures[0].axes
    circles = [line for line in ax.lines if line.get_marker() == "o"]
    (square,) = [line for line in ax.lines if line.get_marker() == "s"]
    (crosses,) = [line for line in ax.lines if line.get_marker() == "x"]
    zero, unif = circles
    np.testing.assert_array_equal(zero.get_xdata(), [1, 2, 4])
    np.testing.assert_array_equal(unif.get_xdata(), [1, 2])
    np.testing.assert_array_equal(crosses.get_xdata(), [2])
    assert square.get_linestyle() == "None" and zero.get_linestyle() == "-"
    assert square.get_color() == zero.get_color() == crosses.get_color() != unif.get_color()
    assert ax.get_legend_handles_labels()[1] == ["zero", "unif"]
    assert ax.get_yscale() == "log"
    # the legend beside the panels (inside one it hid a line), d ticked as plain numbers
    (legend,) = closed_figures[0].legends
    assert [t.get_text() for t in legend.get_texts()] == ["zero", "unif"] and not ax.get_legend()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4"]
    diverged = [{**r, "relative_test_rmse": np.inf} for r in best]  # no value a log axis shows
    plot.relative_rmse_plot(diverged, tmp_path / "all.png")
    (ax,) = closed_figures[1].axes
    assert ax.get_yscale() == "linear"
    assert [line.get_marker() for line in ax.lines].count("x") == 3  # one × line per line


def test_bars_at_one_width_stand_apart_and_unfinished_cells_are_open():
    """Three lines at the same widths drew their bars over each other: each line now sits
    at its own small offset on the log-2 axis (symmetric about the width, under 0.15 of an
    octave), ticks still at the widths run. A cell with unfinished runs (its P(stuck) may
    still change as they would finish) gets an open marker at its point, and the legend
    says so. Under the final-network rule unfinished runs are judged by their last network
    (every Adam run of `compare` is unfinished): no open marker."""
    cells = [_cell(w, d, 0.5, 0.3, 0.7) for d in (0.0, 0.01, 0.1) for w in (16, 64)]
    cells[3] = {**cells[3], "status_counts": {"unfinished": 2, "crossed": 5},
                "stuck_rule": "certificate"}  # fmt: skip
    cells[4] = {**cells[4], "status_counts": {"unfinished": 0, "crossed": 5}}
    cells[5] = {**cells[5], "status_counts": {"unfinished": 3, "crossed": 5}}  # final rule
    (ax,) = failure_probability_figure(cells).axes
    x = np.array([c.lines[0].get_xdata() for c in ax.containers])  # (lines, widths)
    octaves = np.log2(x / [16, 64])
    assert len(np.unique(x[:, 0])) == 3 and np.all(np.abs(octaves) < 0.15)
    np.testing.assert_allclose(octaves.sum(axis=0), 0.0, atol=1e-12)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["16", "64"]
    (open_,) = _marked(ax, "white")
    np.testing.assert_allclose(open_.get_xdata(), [x[1, 1]])  # Δ = 0.01's width 64
    np.testing.assert_allclose(open_.get_ydata(), [0.5])
    assert open_.get_markeredgecolor() == ax.containers[1].lines[0].get_color()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[-1] == plot.UNFINISHED_LABEL and len(labels) == 4
    (ax,) = failure_probability_figure(cells[:3]).axes
    assert plot.UNFINISHED_LABEL not in ax.get_legend_handles_labels()[1]


def test_the_title_names_the_data_and_initialization():
    """A figure's title said which optimizer but not on what data or from which init:
    the spec's data set (a file by its name, a dimension where given), init, bias init
    and LeakyReLU slope are a line of it, in both figures."""
    spec = {"data": "radial", "dim": 4, "init": "kaiming", "bias_init": "pytorch",
            "alpha": 0.01}  # fmt: skip
    line = plot.setting_line(spec)
    assert line == "data radial (d = 4), init kaiming, biases pytorch, LeakyReLU α = 0.01"
    own = plot.setting_line({"data": "file", "data_file": "/x/y/points.csv", "alpha": 0.0})
    assert own == "data points.csv, init he, biases zero"
    assert plot.setting_line({"seed": 3}) == "data six-points, init he, biases zero, seed 3"
    (ax,) = failure_probability_figure([_cell(16, 0.0, 0.5, 0.3, 0.7)], line).axes
    assert ax.get_title().splitlines()[1] == line
    assert comparison_figure([PAIR], line)._suptitle.get_text().endswith("\n" + line)


def test_one_width_is_drawn_in_an_octave_around_it():
    """With one width the lines' small offsets (under 0.15 of an octave) became the whole
    axis: two lines at width 32 sat at its two edges, as if at two widths. The axis now
    spans √2 either side of the width, its lines near the middle."""
    cells = [_cell(32, d, 0.5, 0.3, 0.7) for d in (0.0, 0.1)]
    (ax,) = failure_probability_figure(cells).axes
    np.testing.assert_allclose(ax.get_xlim(), (32 / np.sqrt(2), 32 * np.sqrt(2)))
    x = [c.lines[0].get_xdata()[0] for c in ax.containers]
    assert all(abs(np.log2(v / 32)) < 0.15 for v in x)
    np.testing.assert_allclose(
        comparison_figure([PAIR]).axes[0].get_xlim(), (16 / np.sqrt(2), 16 * np.sqrt(2))
    )


def test_cells_with_diverged_runs_are_marked():
    """A cell whose runs diverged has P(stuck) = 0 (such runs are neither stuck nor
    crossed), which read as if GD had escaped: a × marks it, and the legend says so."""
    cells = [
        _cell(w, 0.0, p, lo, hi) for w, p, lo, hi in ((16, 0.5, 0.3, 0.7), (32, 0.0, 0.0, 0.17))
    ]
    cells[1] = {**cells[1], "status_counts": {"diverged": 20}}
    (ax,) = failure_probability_figure(cells).axes
    (cross,) = _marked(ax, "x")
    x = ax.containers[0].lines[0].get_xdata()
    np.testing.assert_allclose(cross.get_xdata(), [x[1]])
    np.testing.assert_allclose(cross.get_ydata(), [0.0])
    assert [t.get_text() for t in ax.get_legend().get_texts()][-1] == plot.DIVERGED_LABEL
    (ax,) = failure_probability_figure(cells[:1]).axes
    assert plot.DIVERGED_LABEL not in ax.get_legend_handles_labels()[1]


def test_the_title_says_the_step_size_the_budget_and_the_dtype():
    """Two runs at 50 times the paper's step, or of 5 checks, were titled as the default
    run: the spec's step size (rule or value, and factor), step budget and dtype are a
    second line of the setting, where the spec gives them."""
    spec = {"data": "six-points", "init": "he", "bias_init": "zero", "step_size": "paper",
            "step_factor": 50.0, "check_every": 1000, "max_checks": 5,
            "dtype": "float32"}  # fmt: skip
    assert plot.setting_line(spec).splitlines() == [
        "data six-points, init he, biases zero",
        "step size paper × 50, ≤ 5,000 steps, float32",
    ]
    fixed = {**spec, "step_size": 0.125, "step_factor": 1.0, "max_checks": 1000}
    assert plot.setting_line(fixed).splitlines()[1] == "step size 0.125, ≤ 1,000,000 steps, float32"
    early = plot.setting_line({**fixed, "early_stopping": True}).splitlines()[1]
    assert early == "step size 0.125, ≤ 1,000,000 steps, early stopping, float32"
    (ax,) = failure_probability_figure(
        [_cell(16, 0.0, 0.5, 0.3, 0.7)], plot.setting_line(spec)
    ).axes
    assert ax.get_title().splitlines()[1:3] == plot.setting_line(spec).splitlines()


def test_a_published_table_is_redrawn_with_its_own_numbers(tmp_path, closed_figures):
    """`scripts/redraw_table_figure.py` reads the H100 run's table back (README's figure):
    8 widths × 3 Δ, each cell's P(stuck) and interval as the table prints them."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    source = root / "scripts" / "redraw_table_figure.py"
    spec = importlib.util.spec_from_file_location("redraw_table_figure", source)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    table = (root / "benchmarks" / "results" / "gpu-h100-2026-11-27.md").read_text()
    cells = script.cells_of(table)
    assert len(cells) == 24 and {c["delta"] for c in cells} == {0.0, 0.01, 0.1}
    (last,) = [c for c in cells if (c["width"], c["delta"]) == (2048, 0.1)]
    assert last["p_stuck"] == 0.368 and last["ci95"] == [0.338, 0.399]
    plot.failure_probability_plot(cells, tmp_path / "f.png")
    (ax,) = closed_figures[0].axes
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(2**k) for k in range(4, 12)]
    assert ax.get_ylabel() == "P(provably stuck)"
    header = "| n | Δ = 0 | Δ = 0.1 | \n|---|---|---|\n"  # a trailing space: still read
    assert len(script.cells_of(header + "| 16 | 0.5 [0.4, 0.6] | 0.2 [0.1, 0.3] |")) == 2
    with pytest.raises(ValueError, match="not one 'p \\[low, high\\]' per Δ column"):
        script.cells_of(header + "| 16 | 0.5 [0.4, 0.6] | - |")
    with pytest.raises(ValueError, match="no table"):
        script.cells_of("no table here")


def test_section_10_draws_each_relative_rmse_with_its_standard_error(tmp_path, closed_figures):
    """The table gives test RMSE ± its standard error over runs; the figure drew the mean
    alone. Each point's bar is ± that error on the relative scale (test_rmse_se over the
    best test RMSE at its (data, d))."""
    row = dict(data="radial", init="he", optimizer="sgd", bias_init="zero")
    keys = ("dim", "test_rmse", "test_rmse_se", "relative_test_rmse")
    best = [{**row, **dict(zip(keys, values, strict=True))}
            for values in ((1, 2.0, 0.1, 1.0), (2, 3.0, 0.3, 1.5))]  # fmt: skip
    plot.relative_rmse_plot(best, tmp_path / "s10.png")
    (ax,) = closed_figures[0].axes
    (segments,) = ax.containers[0].lines[2]
    spans = [tuple(segment[:, 1]) for segment in segments.get_segments()]
    np.testing.assert_allclose(spans, [(0.95, 1.05), (1.35, 1.65)])


def test_a_comparison_marks_pairs_of_cells_with_unfinished_runs():
    """The failure figure marked cells with unfinished runs, the comparison of the same
    run did not: a pair whose cell of either optimizer has unfinished runs is open, one
    with diverged runs has a ×, and the legend says so; other pairs and panels stay
    filled."""
    pairs = [{"a": "gd", "b": "adam", "width": w, "delta": d, "difference": 0.1 * w / 16,
              "ci95": [0.0, 0.5]} for d in (0.0, 0.1) for w in (16, 32)]  # fmt: skip
    counts = (("gd", 16, 0.0, 0), ("adam", 16, 0.0, 0), ("gd", 32, 0.0, 0),
              ("adam", 32, 0.0, 3), ("gd", 16, 0.1, 0), ("adam", 16, 0.1, 0))  # fmt: skip
    cells = [{"optimizer": o, "width": w, "delta": d, "status_counts": {"unfinished": n}}
             for o, w, d, n in counts]  # fmt: skip
    fig = comparison_figure(pairs, "", cells)
    first, second = fig.axes
    (open_,) = _marked(first, "white")
    x = first.containers[0].lines[0].get_xdata()
    np.testing.assert_allclose(open_.get_xdata(), [x[1]])
    np.testing.assert_allclose(open_.get_ydata(), [0.2])
    # in its pair's colour (a marker of the cycle's next colour took it from the next pair)
    colour = first.containers[0].lines[0].get_color()
    assert open_.get_color() == open_.get_markeredgecolor() == colour
    assert not _marked(second, "white")
    assert plot.UNFINISHED_LABEL in [t.get_text() for t in second.get_legend().get_texts()]
    fig = comparison_figure(pairs, "", cells[:3])
    assert plot.UNFINISHED_LABEL not in fig.axes[-1].get_legend_handles_labels()[1]
    cells[4] = {**cells[4], "status_counts": {"diverged": 2}}  # gd at width 16, Δ = 0.1
    second = comparison_figure(pairs, "", cells).axes[1]
    (cross,) = _marked(second, "x")
    np.testing.assert_allclose(cross.get_xdata(), [second.containers[0].lines[0].get_xdata()[0]])
    assert plot.DIVERGED_LABEL in [t.get_text() for t in second.get_legend().get_texts()]


def test_section_10_sets_p_ex_squares_side_by_side_at_d_1(tmp_path, closed_figures):
    """P_ex's squares, one per bias init at d = 1, hid each other where their RMSEs were
    close: each sits at its own offset, in bias order, left of d = 1 (where P_d's circles
    are) by 0.1 to 0.5 of an octave; P_d's circles stay at their d."""
    row = dict(init="he", optimizer="sgd", dim=1, relative_test_rmse=1.5)
    best = [{**row, "data": data, "bias_init": b}
            for data in ("radial", "p-ex") for b in ("zero", "unif", "pytorch")]  # fmt: skip
    plot.relative_rmse_plot(best, tmp_path / "s10.png")
    (ax,) = closed_figures[0].axes
    x = {c.lines[0].get_marker(): [] for c in ax.containers}
    for c in ax.containers:
        x[c.lines[0].get_marker()].append(c.lines[0].get_xdata()[0])
    assert x["o"] == [1, 1, 1]
    octaves = np.log2(x["s"])
    assert np.all(np.diff(octaves) > 0.1)
    assert np.all((octaves >= -0.5 - 1e-12) & (octaves <= -0.1))


@pytest.mark.parametrize("count", [1, 3, 9])
def test_bands_that_overlap_stay_see_through(count):
    """Nine lines' bands (three optimizers × three Δ) at 0.2 each stacked to 87% opaque,
    a muddy block hiding the bars: where every band overlaps, together they are at most
    about half opaque, and each stays visible."""
    cells = [{**_cell(16, 0.1 * k, 0.5, 0.3, 0.7), "optimizer": "gd"} for k in range(count)]
    (ax,) = failure_probability_figure(cells).axes
    alphas = [band.get_alpha() for band in ax.collections if band.get_alpha() is not None]
    assert len(alphas) == count and all(0.06 <= a <= 0.2 for a in alphas)
    assert 1 - np.prod([1 - a for a in alphas]) <= 0.5


def test_importing_the_figures_leaves_the_callers_backend():
    """gdrelu.plot switched matplotlib to Agg on import: a notebook's inline backend went
    with it (plt.show drew nothing after). A fresh process that chose the pdf backend
    keeps it after the import; the command sets Agg itself."""
    import subprocess
    import sys

    code = ("import matplotlib; matplotlib.use('pdf'); import gdrelu.plot; "
            "print(matplotlib.get_backend())")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "pdf", out.stderr
