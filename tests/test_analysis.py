"""What summary.json says of a cell, from results built by hand."""

import re

import numpy as np
import pytest
from conftest import finished_cell

from gdrelu import ExperimentSpec
from gdrelu.analysis import cell_summary, comparisons, format_comparisons, format_table
from gdrelu.cells import Cell
from gdrelu.outcome import Status
from gdrelu.records import RUN_COLUMNS, run_records


def _cell(loss_below_step, final_loss, threshold, status=None, escaped=None):
    """A cell of width 4 under the final-network rule (stop_on=()) whose runs have these
    first steps below L_lin, final losses and L_lin, unfinished and not escaped unless
    `status` and `escaped` say otherwise."""
    runs = len(final_loss)
    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=runs, stop_on=())
    status = [Status.UNFINISHED] * runs if status is None else status
    return finished_cell(
        Cell(4, 0.0, spec),
        status,
        escaped,
        loss_below_step=loss_below_step,
        final_loss=np.asarray(final_loss, float),
        linear_threshold=np.asarray(threshold, float),
    )


def test_the_summary_counts_runs_that_ever_and_finally_dipped_below_the_threshold():
    """Runs 0 and 1 dipped below L_lin at some step; run 1 ended below it, run 0 came
    back; run 2 ends exactly at the margin (1 - 1e-6) L_lin, which is not below; run 3
    never dipped."""
    cr = _cell([120, 30, -1, -1], [1.0, 0.5, 1.0 - 1e-6, 2.0], [1.0, 1.0, 1.0, 1.0])
    below = cell_summary(cr)["loss_below_threshold"]
    assert below["ever"]["runs"] == 2 and below["ever"]["fraction"] == 0.5
    assert below["final"]["runs"] == 1
    low, high = below["final"]["ci95"]
    assert low < 0.25 < high
    records = run_records(cr)
    assert "loss_below_step" in RUN_COLUMNS
    assert [r.loss_below_step for r in records] == [120, 30, -1, -1]


@pytest.mark.parametrize("mask", [[True] * 3, [False] * 3])
def test_fractions_of_none_and_all_have_one_sided_intervals(mask):
    cr = _cell([5 if m else -1 for m in mask], [0.0] * 3, [1.0] * 3)
    ever = cell_summary(cr)["loss_below_threshold"]["ever"]
    assert ever["ci95"][1 if mask[0] else 0] == (1.0 if mask[0] else 0.0)


def _optimizer_cell(optimizer, stuck, delta=0.0, **spec_fields):
    """A cell of `optimizer` whose runs are stuck where `stuck` says: certified stuck or
    crossed and escaped, so every stuck rule reads them alike."""
    stuck = np.asarray(stuck, bool)
    spec_fields = {"runs": stuck.size, **spec_fields}  # runs: a grown cell's first batch
    spec = ExperimentSpec(widths=(4,), deltas=(delta,), optimizer=optimizer, **spec_fields)
    status = np.where(stuck, Status.STUCK, Status.CROSSED)
    never_below = np.full(stuck.size, -1)
    return finished_cell(Cell(4, delta, spec), status, ~stuck, loss_below_step=never_below)


def test_optimizers_are_compared_within_each_delta():
    """Two Δ: each (width, Δ) cell is its own comparison, pairing GD's and Adam's runs of
    that Δ alone: at Δ = 0 GD alone is stuck in 2 runs, at Δ = 0.1 Adam alone in 1."""
    cells = [
        _optimizer_cell("gd", [1, 1, 0], 0.0),
        _optimizer_cell("gd", [0, 0, 0], 0.1),
        _optimizer_cell("adam", [0, 0, 0], 0.0),
        _optimizer_cell("adam", [1, 0, 0], 0.1),
    ]
    pairs = comparisons(cells)
    assert [(c["a"], c["b"], c["delta"], c["discordant"]) for c in pairs] == [
        ("gd", "adam", 0.0, [2, 0]),
        ("gd", "adam", 0.1, [0, 1]),
    ]


def test_cells_that_are_no_pairs_are_refused():
    """A second GD cell replaced the first without a word, and GD's cell of seed 1 was
    paired with Adam's of seed 7, whose run i starts from other data and another network;
    so were cells of another init (another cell hash)."""
    gd, adam = _optimizer_cell("gd", [1, 1, 0]), _optimizer_cell("adam", [0, 1, 0])
    with pytest.raises(ValueError, match=r"^cell_results: two cells of optimizer 'gd' at width 4"):
        comparisons([gd, _optimizer_cell("gd", [0, 0, 0]), adam])
    for other in (
        _optimizer_cell("adam", [0, 1, 0], seed=7),
        _optimizer_cell("adam", [0, 1, 0], init="swapped"),
    ):
        with pytest.raises(
            ValueError, match=r"^cell_results: 'adam' at width 4, Δ = 0 \(seed, cell\)"
        ):
            comparisons([gd, other])
    assert comparisons([gd, adam])[0]["discordant"] == [1, 0]


def test_cells_grown_to_different_sizes_are_paired_on_the_runs_both_have():
    """`target_halfwidth` grows each optimizer's cell on its own; run i is the same start
    for both, so the comparison pairs runs 0-3 and leaves GD's runs 4-7 out."""
    gd = _optimizer_cell("gd", [1, 1, 1, 0, 1, 1, 1, 1])
    adam = _optimizer_cell("adam", [0, 1, 0, 0])
    (pair,) = comparisons([gd, adam])
    assert (pair["a"], pair["b"], pair["runs"]) == ("gd", "adam", 4)
    assert pair["discordant"] == [2, 0] and pair["difference"] == 0.5


@pytest.mark.parametrize("halfwidth", [None, 0.3])
def test_a_comparison_of_grown_cells_says_its_interval_is_nominal(halfwidth):
    """The number of pairs is then a stopping time of the outcomes: 0.932 coverage where a
    fixed number gave 0.953 in the stats review's simulation. Counts as in the test above:
    discordant (2, 0) over 4 pairs."""
    growth = {} if halfwidth is None else {"target_halfwidth": halfwidth, "max_runs": 8}
    growth = {**growth, "runs": 4}
    gd = _optimizer_cell("gd", [1, 1, 1, 0, 1, 1, 1, 1], **growth)
    adam = _optimizer_cell("adam", [0, 1, 0, 0], **growth)
    (pair,) = comparisons([gd, adam])
    assert pair.get("ci95_nominal") == (None if halfwidth is None else True)
    lines = format_comparisons([pair]).splitlines()
    low, high = pair["ci95"]
    assert lines[0] == (
        f"gd - adam  n=4 Δ=0: +0.500 [{low:+.3f}, {high:+.3f}] over 4 pairs  McNemar p = 0.5"
    )
    nominal = "95% CIs of the differences are nominal: --target-halfwidth chose the run counts"
    assert [line.split(" from")[0] for line in lines[1:]] == (
        [] if halfwidth is None else [nominal]
    )


def test_a_grown_cell_that_stopped_first_makes_its_comparison_nominal():
    """GD's cell met its target after 4 runs, Adam's has a fixed 8: the 4 pairs are a
    count GD's outcomes chose, so the comparison's interval is nominal (docs/theory.md,
    "Outcome of a run") though only one of the cells was grown."""
    gd = _optimizer_cell("gd", [1, 1, 1, 0], target_halfwidth=0.45, max_runs=8)
    adam = _optimizer_cell("adam", [0, 1, 0, 0, 1, 1, 0, 0])
    (pair,) = comparisons([gd, adam])
    assert pair["runs"] == 4 and pair.get("ci95_nominal") is True


def test_a_status_prints_as_the_word_runs_csv_gives_it():
    """An IntEnum prints its number ("1"); a status prints its label, in str, print and
    f-strings alike, and still equals its number in the result's arrays."""
    assert str(Status.CROSSED) == "crossed" and f"{Status.EARLY_STOPPED:>14}" == " early_stopped"
    assert f"{Status(int(np.int32(2)))}" == "stuck" and Status.STUCK == 2
    assert f"{Status.CROSSED:d}" == "1" and f"{Status.DIVERGED:03d}" == "006"  # numbers still


def test_status_counts_name_every_final_status_once():
    """summary.json's status_counts: runs per `status` of runs.csv, every status named,
    zeros included (docs/outputs.md), and nothing else: no count of still-running runs."""
    counts = cell_summary(_optimizer_cell("gd", [1, 0, 0]))["status_counts"]
    assert counts == {"crossed": 2, "stuck": 1, "a_degenerate": 0, "x_degenerate": 0,
                      "early_stopped": 0, "diverged": 0, "unfinished": 0}  # fmt: skip


@pytest.mark.parametrize(("halfwidth", "met"), [(None, None), (0.4, True), (0.3, False)])
def test_a_grown_cell_says_whether_it_met_its_target(halfwidth, met):
    """4 stuck of 8, grown from 4: the interval (0.157, 0.843) has half-width 0.343."""
    growth = {} if halfwidth is None else {"target_halfwidth": halfwidth, "max_runs": 8}
    summary = cell_summary(_optimizer_cell("gd", [1, 0] * 4, runs=4, **growth))
    assert summary.get("target_halfwidth_met") == met
    assert summary.get("ci95_nominal") == (None if halfwidth is None else True)
    lines = format_table([summary]).splitlines()[2:]  # after the header and the row
    nominal = [
        "95% CIs are nominal and P(stuck) leans slightly away from 1/2: --target-halfwidth "
        "chose the run counts from the outcomes"
    ]
    missed = ["--max-runs reached before the target half-width: gd n=4 Δ=0"]
    assert [line.split(" (docs")[0] for line in lines] == {
        None: [],
        True: nominal,
        False: nominal + missed,
    }[met]


@pytest.mark.parametrize("halfwidth", [0.4, 0.3])
def test_a_cell_that_cannot_grow_has_exact_intervals(halfwidth):
    """max_runs = runs: `target_halfwidth` can add no run, so the run count is fixed and
    no interval of the cell, nor of its comparisons, is nominal; whether the 8 runs met
    the target is still said (half-width 0.343, as above)."""
    growth = {"target_halfwidth": halfwidth, "max_runs": 8}
    gd = _optimizer_cell("gd", [1, 0] * 4, **growth)
    summary = cell_summary(gd)
    assert summary["runs"] == 8 and summary["target_halfwidth_met"] == (halfwidth == 0.4)
    assert "ci95_nominal" not in summary
    assert not any("nominal" in line for line in format_table([summary]).splitlines())
    (pair,) = comparisons([gd, _optimizer_cell("adam", [0, 1] * 4, **growth)])
    assert "ci95_nominal" not in pair
    assert len(format_comparisons([pair]).splitlines()) == 1


def test_a_target_equal_to_the_half_width_is_met():
    """A cell grows until its half-width is at most H (`ExperimentSpec`): 4 stuck of 8
    with H exactly the interval's half-width has met it."""
    from gdrelu.stats import failure_probability

    low, high = failure_probability(4, 8)[1]
    summary = cell_summary(
        _optimizer_cell("gd", [1, 0] * 4, runs=4, target_halfwidth=(high - low) / 2, max_runs=8)
    )
    assert summary["target_halfwidth_met"] is True


def test_a_simulation_result_says_which_runs_are_stuck_by_either_rule():
    """Every final status twice, once escaped and once not: the certificate rule reads the
    status alone (stuck, a- and x-degenerate); the final rule adds the runs not escaped,
    except a diverged one and one the crossing rule stopped (halted where it may escape)."""
    final = [s for s in Status if s != Status.RUNNING]
    status = np.array(final * 2, np.int8)
    escaped = np.repeat([True, False], len(final))
    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=status.size)
    checked = np.ones(status.size, bool)
    result = finished_cell(Cell(4, 0.0, spec), status, escaped, certificate_checked=checked).result
    assert [s.label for s in final] == ["crossed", "stuck", "a_degenerate", "x_degenerate",
                                        "early_stopped", "diverged", "unfinished"]  # fmt: skip
    proven = [False, True, True, True, False, False, False]
    expected = {
        "certificate": proven * 2,
        "final": [*proven, False, True, True, True, True, False, True],
    }
    for rule, stuck in expected.items():
        np.testing.assert_array_equal(result.stuck(rule), stuck)
    with pytest.raises(ValueError, match="rule: 'paper'"):
        result.stuck("paper")
    unchecked = result._replace(certificate_checked=np.arange(status.size) != 3)
    np.testing.assert_array_equal(unchecked.stuck("final"), expected["final"])
    with pytest.raises(ValueError, match="1 of 14 runs were never checked"):
        unchecked.stuck()


@pytest.mark.parametrize(("runs", "count"), [(4, 3), (5, 2), (6, 3)])
def test_processes_shares_join_into_the_cell_in_run_order(runs, count):
    """Process i holds runs i, i + P, ... (shares of unequal size when P does not divide
    the runs); each pads its share to the largest, and the joined cell is run 0, 1, 2, ...
    again. The gather here stacks every process's share padded as this one padded its own."""
    import jax

    from gdrelu.processes import Processes, cell_from_processes

    whole = _optimizer_cell("gd", np.arange(runs) % 2 == 0)
    whole = whole._replace(step_size=np.arange(runs) + 0.5)
    shares = [
        whole._replace(
            step_size=whole.step_size[i::count],
            result=jax.tree.map(lambda v, i=i: np.asarray(v)[i::count], whole.result),
        )
        for i in range(count)
    ]

    def gather(tree):
        size = jax.tree.leaves(tree)[0].shape[0]  # the share this process padded to

        def padded(share):
            return jax.tree.map(
                lambda v: np.concatenate([v, np.repeat(v[-1:], size - v.shape[0], 0)]),
                (share.step_size, share.result),
            )

        return jax.tree.map(lambda *v: np.stack(v), *[padded(s) for s in shares])

    joined = cell_from_processes(shares[0], runs, Processes(0, count, gather))
    np.testing.assert_array_equal(joined.step_size, whole.step_size)
    np.testing.assert_array_equal(joined.result.status, whole.result.status)


def test_the_table_columns_fit_wide_networks_and_many_runs():
    """Width 2^20 beside width 4, 10^7 runs, Δ = 0.125: every value stands under its
    header's last letter (right-aligned), as in the narrow table."""
    narrow = cell_summary(_optimizer_cell("gd", [1, 0, 0]))
    wide = {**narrow, "width": 2**20, "delta": 0.125, "runs": 10**7, "stuck": 10**7 - 2}
    wide["crossed_not_stuck"] = 2
    header, *rows = format_table([narrow, wide]).splitlines()
    counts = len(header) - len("  P(stuck) [95% CI]")  # where the counts' columns end

    def ends(line):
        return [m.end() for m in re.finditer(r"\S+", line[:counts])]

    assert [ends(row) for row in rows] == [ends(header)] * 2


def test_the_spec_knows_when_simulate_applies_the_certificate():
    """`ExperimentSpec.applies_certificate` (what an older unit's `certificate_checked` is
    read as, and what decides the stuck rule) agrees with the rules `simulate` applies to
    the arguments the runner gives it, over every valid combination of optimizer, bias
    init, init, stop_on and early stopping in 1-D."""
    import itertools

    from gdrelu.optim import get_optimizer
    from gdrelu.outcome import stop_rules
    from gdrelu.runner import training_arguments
    from gdrelu.spec import SpecError

    stop_ons = [None, (), ("crossed",), ("stuck", "degenerate"), ("crossed", "degenerate"),
                ("crossed", "stuck", "degenerate")]  # fmt: skip
    seen = []
    for optimizer, bias_init, init, stop_on, early in itertools.product(
        ("gd", "sgd", "momentum", "adam"), ("zero", "unif"), ("he", "swapped", "ntk"),
        stop_ons, (False, True),
    ):  # fmt: skip
        try:
            spec = ExperimentSpec(widths=(4,), optimizer=optimizer, bias_init=bias_init,
                                  init=init, stop_on=stop_on, early_stopping=early)  # fmt: skip
        except SpecError:
            continue
        args = training_arguments(spec)
        trained_by = get_optimizer(args["optimizer"], sampler=args["sampler"],
                                   batch_size=args["batch_size"])  # fmt: skip
        rules = stop_rules(args["stop_on"], trained_by, args["parameterization"] == "standard",
                           spec.input_dim == 1, "columns", spec.early_stopping)  # fmt: skip
        applied = {"stuck", "degenerate"} <= set(rules)
        assert applied == spec.applies_certificate, spec
        seen.append(applied)
    assert seen.count(True) >= 4 and seen.count(False) >= 40


def test_the_final_rule_table_partitions_the_runs_into_escaped_stuck_and_diverged():
    """Under the final-network rule (no certificate: stop_on=()), the table's columns are
    escaped (final network out of the linear regime, or halted by the crossing rule),
    stuck and diverged, and they add up to the runs; `escaped_final` counts the runs the
    detector classified escaped (a diverged run among them, `SimulationResult.escaped`)."""
    status = [Status.UNFINISHED, Status.UNFINISHED, Status.UNFINISHED, Status.CROSSED,
              Status.DIVERGED, Status.DIVERGED, Status.EARLY_STOPPED]  # fmt: skip
    escaped = [False, False, True, False, True, True, False]
    cr = _cell([-1] * 7, [1.0] * 7, [1.0] * 7, status, escaped)
    summary = cell_summary(cr)
    assert summary["stuck_rule"] == "final"
    assert summary["stuck"] == 3  # two unfinished and the early-stopped one, not escaped
    assert summary["detectors"]["escaped_final"] == 3
    header, row = format_table([summary]).splitlines()
    columns = dict(zip(header.split()[:7], row.split()[:7], strict=True))
    assert columns["escaped"] == "2"  # the escaped unfinished run and the crossed one
    assert (columns["stuck"], columns["diverged"], columns["runs"]) == ("3", "2", "7")


def test_a_results_repr_is_its_counts_not_its_arrays():
    """A thousand runs' result printed every array whole (about 200 KB in a notebook): its
    repr is now its runs, width and the counts of each status, and a cell's adds the cell."""
    spec = ExperimentSpec(widths=(24,), deltas=(0.1,), runs=1000)
    status = [Status.CROSSED] * 120 + [Status.STUCK] * 870 + [Status.UNFINISHED] * 10
    cell_result = finished_cell(Cell(24, 0.1, spec), status)
    text = repr(cell_result.result)
    assert text == "SimulationResult(runs=1000, width=24, crossed=120, stuck=870, unfinished=10)"
    cell_text = repr(cell_result)
    assert cell_text.startswith(f"CellResult({cell_result.cell.cell_id}: width=24, delta=0.1, ")
    assert cell_text.endswith(f"optimizer='gd', {text})") and len(cell_text) < 200
