"""The ETA of a long run comes from checks done and left per cell, not from finished runs."""

import io

import pytest

from gdrelu.progress import CheckClock, can_stop_early, spec_clock
from gdrelu.protocols import protocol
from gdrelu.spec import ExperimentSpec


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _run_checks(clock, fake, spec, widths, count, seconds_each, first=1):
    """Checks first, ..., first + count - 1 of one batch, `seconds_each` apart."""
    for k in range(first, first + count):
        fake.now += seconds_each
        clock.on_check(spec, widths, k)


def test_runs_that_cannot_stop_need_their_whole_budget():
    """A compare whose GD cells are done and whose SGD cells (no stop rule) have done 10 of
    1000 checks at 1 s each: 990 s are left, however few runs have finished."""
    fake = FakeClock()
    cells = [[(16, 0.1)], [(16, 0.1)]]
    clock = CheckClock([1000, 1000], [True, False], cells, clock=fake)
    clock.start()
    _run_checks(clock, fake, 0, (16,), 30, 0.01)
    clock.cell_done(0, (16, 0.1))
    _run_checks(clock, fake, 1, (16,), 10, 1.0)
    assert clock.seconds_left() == pytest.approx(990.0)


def test_cells_that_can_stop_take_as_many_checks_as_the_slowest_finished_cell():
    """Widths 16 and 2048, two Δ each: width 16's cells finished after 40 checks at 0.1 s
    per batch check (0.05 s per cell-check); width 2048 has done 5 checks at 2 s each
    (1 s per cell-check), so 2 cells × 35 checks × 1 s = 70 s are left: the cost line
    through the two widths timed prices width 2048 at its own rate, not the spec's mean
    (14 s / 90 cell-checks)."""
    fake = FakeClock()
    cells = [[(16, 0.0), (16, 0.1), (2048, 0.0), (2048, 0.1)]]
    clock = CheckClock([1000], [True], cells, clock=fake)
    clock.start()
    _run_checks(clock, fake, 0, (16,), 40, 0.1)
    clock.cell_done(0, (16, 0.0))
    clock.cell_done(0, (16, 0.1))
    _run_checks(clock, fake, 0, (2048,), 5, 2.0)
    assert clock.checks_left(0) == 70
    assert clock.seconds_left() == pytest.approx(70 * 1.0)


def test_a_cell_past_the_expected_checks_still_needs_one_more():
    fake = FakeClock()
    clock = CheckClock([100], [True], [[(8, 0.0), (32, 0.0)]], clock=fake)
    clock.start()
    _run_checks(clock, fake, 0, (8,), 3, 1.0)
    clock.cell_done(0, (8, 0.0))
    _run_checks(clock, fake, 0, (32,), 7, 1.0)
    assert clock.checks_left(0) == 1


def test_cells_trained_in_several_batches_owe_the_rest_of_the_batch_under_way():
    """A memory budget or a grown cell trains a cell's runs in batches, each up to the
    budget's checks: two batches of 4 checks and 2 of a third leave 2 checks each to
    widths 5 and 6 (not 0, nor a negative count cancelling width 8's 4). With stop rules,
    the slowest batch of a finished cell (4 checks), not the cell's sum over its batches
    (7), prices the others: width 8, one check in, needs 3 more. Width 8 was not timed, and
    the (5, 6) batches (0.5 s per cell-check, mean width 5.5) are all that was: its checks
    cost at most 0.5 s × 8 / 5.5, and the estimate is a bound."""
    fake = FakeClock()
    clock = CheckClock([4], [False], [[(5, 0.0), (6, 0.0), (8, 0.0)]], clock=fake)
    clock.start()
    for count in (4, 4, 2):  # three batches of the (5, 6) bucket
        _run_checks(clock, fake, 0, (5, 6), count, 1.0)
    assert clock.checks_left(0) == 2 + 2 + 4
    assert clock.seconds_left() == pytest.approx(4 * 0.5 + 4 * 0.5 * 8 / 5.5)
    assert clock.bounded()
    stops = CheckClock([10], [True], [[(5, 0.0), (8, 0.0)]], clock=fake)
    for count in (4, 3):
        _run_checks(stops, fake, 0, (5,), count, 1.0)
    stops.cell_done(0, (5, 0.0))
    _run_checks(stops, fake, 0, (8,), 1, 1.0)
    assert stops.checks_left(0) == 3


def test_no_estimate_before_the_first_check_and_none_left_at_the_end():
    fake = FakeClock()
    clock = CheckClock([10], [False], [[(8, 0.0)]], clock=fake)
    clock.start()
    assert clock.seconds_left() is None
    _run_checks(clock, fake, 0, (8,), 10, 0.5)
    clock.cell_done(0, (8, 0.0))
    assert clock.seconds_left() == 0.0


@pytest.mark.parametrize(
    ("fields", "can_stop"),
    [
        ({}, True),  # GD's default rules: crossing and the certificate
        ({"stop_on": ()}, False),
        ({"stop_on": (), "early_stopping": True}, True),
        ({"optimizer": "sgd"}, False),  # no default rule is valid for SGD
        (protocol("sgd"), True),  # crossing and early stopping
        ({"bias_init": "unif"}, False),  # no rule outside the paper's setting
        ({"optimizer": "adam", "stop_on": ("crossed",)}, True),
    ],
)
def test_runs_can_stop_early_with_stop_rules_or_early_stopping(fields, can_stop):
    spec = ExperimentSpec(**{"widths": (4,), **fields})
    assert can_stop_early(spec) is can_stop


def test_a_clock_over_specs_has_their_budgets_and_cells():
    specs = [
        ExperimentSpec(widths=(4, 8), deltas=(0.0, 0.1), max_checks=7),
        ExperimentSpec(widths=(4,), deltas=(0.0,), optimizer="sgd", max_checks=3),
    ]
    clock = spec_clock(specs, clock=FakeClock())
    assert clock.budgets == [7, 3] and clock.can_stop == [True, False]
    assert list(clock.done[0]) == [(4, 0.0), (4, 0.1), (8, 0.0), (8, 0.1)]


def test_the_estimate_is_a_bound_until_a_cell_that_can_stop_has_stopped():
    """Priced at the whole budget while none has stopped, a first ETA of hours for a run
    of seconds: the bar says it is an upper bound. A spec that cannot stop needs its
    budget: an estimate from the start."""
    fake = FakeClock()
    clock = CheckClock([1000, 10], [True, False], [[(8, 0.0), (16, 0.0)], [(8, 0.0)]], fake)
    clock.start()
    _run_checks(clock, fake, 0, (8, 16), 1, 1.0)
    assert clock.bounded()
    clock.cell_done(0, (8, 0.0))
    assert not clock.bounded()
    assert not CheckClock([10], [False], [[(8, 0.0)]], fake).bounded()
    resumed = CheckClock([1000], [True], [[(8, 0.0), (16, 0.0)]], fake)
    resumed.start()
    resumed.cell_done(0, (8, 0.0))  # loaded from its unit: no check of it was counted
    _run_checks(resumed, fake, 0, (16,), 1, 1.0)
    assert resumed.checks_left(0) == 999 and resumed.bounded()


def test_the_bar_marks_a_bound():
    from gdrelu.cli.progress import RunProgress

    fake = FakeClock()
    clock = CheckClock([1000], [True], [[(8, 0.0), (16, 0.0)]], fake)
    bar = RunProgress(20, clock, enabled=False)
    _run_checks(clock, fake, 0, (8, 16), 1, 1.0)
    assert bar.postfix().endswith("eta ≤ 16:39")  # 2 cells × 999 checks × 0.5 s
    clock.cell_done(0, (8, 0.0))
    assert bar.postfix().endswith("eta 00:00")  # width 16 is expected to stop now too


class _Terminal(io.StringIO):
    """A screen: the bar is drawn every `REFRESH_SECONDS` on a terminal."""

    def isatty(self) -> bool:
        return True


def test_a_log_gets_the_bar_every_half_minute_not_every_second(monkeypatch):
    """stderr to a batch job's log (no terminal) kept every state of the bar, about one a
    second for the whole run: there it is drawn every `LOG_SECONDS`, and once at the end
    with the final counts, where a terminal gets each check."""
    import time

    import numpy as np

    from gdrelu.cli import progress
    from gdrelu.engine import Status

    monkeypatch.setattr(progress, "REFRESH_SECONDS", 0.0)
    screens = {"log": io.StringIO(), "terminal": _Terminal()}
    for screen in screens.values():
        clock = CheckClock([1000], [False], [[(8, 0.0)]], FakeClock())
        bar = progress.RunProgress(10, clock, enabled=True, file=screen)
        for k in range(1, 6):
            time.sleep(0.02)
            bar.on_check(0, (8,), k, np.full(10, Status.RUNNING))
        drawn = screen.getvalue().count("check ")
        bar.on_cells_done(0, [])
        bar.close()
        screen.drawn_before_close = drawn
    assert screens["terminal"].drawn_before_close >= 5 and screens["log"].drawn_before_close == 0
    assert "n=8 check 5" in screens["log"].getvalue().replace("\r", "\n").splitlines()[-1]


def test_the_bar_shows_each_check_while_no_run_finishes(monkeypatch):
    """After runs finished fast (tqdm then draws only every so many runs), the checks of a
    batch whose runs train their whole budget still reach the screen: a `compare` showed
    the same check for 19 minutes."""
    import time

    import numpy as np

    from gdrelu.cli import progress
    from gdrelu.engine import Status

    monkeypatch.setattr(progress, "REFRESH_SECONDS", 0.0)
    fake = FakeClock()
    clock = CheckClock([1000, 1000], [True, False], [[(8, 0.0)], [(8, 0.0)]], fake)
    screen = _Terminal()
    bar = progress.RunProgress(4000, clock, enabled=True, labels=["gd ", "sgd "], file=screen)
    for k in (1, 2, 3):  # a thousand runs stop at each check, a tenth of a second apart
        time.sleep(0.12)
        status = np.where(np.arange(3000) < 1000 * k, Status.STUCK, Status.RUNNING)
        bar.on_check(0, (8,), k, status)
    bar.on_cells_done(0, [])
    for k in (1, 2, 3):  # then no run stops
        time.sleep(0.12)
        bar.on_check(1, (8,), k, np.full(1000, Status.RUNNING))
    assert (
        screen.getvalue().replace("\r", "\n").strip().splitlines()[-1].startswith("sgd n=8 check 3")
    )


def test_cells_that_can_stop_are_priced_at_the_slowest_finished_cell_not_the_fastest():
    """Widths 8 and 16 finished after 10 and 40 checks (each its own batch): width 32,
    at 5 checks, is expected to need 40, so 35 are left (not 10 - 5 = 5)."""
    fake = FakeClock()
    clock = CheckClock([1000], [True], [[(8, 0.0), (16, 0.0), (32, 0.0)]], clock=fake)
    clock.start()
    _run_checks(clock, fake, 0, (8,), 10, 1.0)
    clock.cell_done(0, (8, 0.0))
    _run_checks(clock, fake, 0, (16,), 40, 1.0)
    clock.cell_done(0, (16, 0.0))
    _run_checks(clock, fake, 0, (32,), 5, 1.0)
    assert clock.checks_left(0) == 35


def test_a_finished_cell_stops_counting_checks_of_its_batch():
    """Width 16's two Δ share a batch: Δ = 0 finished after 10 checks, Δ = 0.1 went on for
    5 more. Δ = 0 took 10, not 15: width 32 (2 done) needs 8 more, Δ = 0.1 one (9 in all),
    priced at width 32's 1 s per cell-check and width 16's 14 s over 18 + 5 cell-checks
    (each batch's first check is priced apart, `test_a_batch_s_first_check_...`)."""
    fake = FakeClock()
    clock = CheckClock([1000], [True], [[(16, 0.0), (16, 0.1), (32, 0.0)]], clock=fake)
    clock.start()
    _run_checks(clock, fake, 0, (16,), 10, 1.0)
    clock.cell_done(0, (16, 0.0))
    _run_checks(clock, fake, 0, (16,), 5, 1.0, first=11)
    _run_checks(clock, fake, 0, (32,), 2, 1.0)
    assert clock.checks_left(0) == 9
    assert clock.seconds_left() == pytest.approx(8 * 1.0 + 1 * 14 / 23)


def _adam_units(clock, fake, widths, seconds):
    """Each width alone in its batch, 3 Δ cells, 1000 checks, `seconds` per unit."""
    for width, unit in zip(widths, seconds, strict=True):
        _run_checks(clock, fake, 0, (width,), 1000, unit / 1000)
        for delta in (0.0, 0.01, 0.1):
            clock.cell_done(0, (width, delta))


def test_a_wider_cell_is_priced_on_the_line_through_the_widths_timed():
    """The default `compare`'s Adam units took 68.8, 129.1, 251.3 and 500.4 s at widths
    16-128 (forty-eighth session). Priced at width 16's rate, 64 and 128 would need 3 × 68.8 s
    where they took 751.7 s. Once 16 and 32 are timed, the line through them prices 64 and
    128: 68.8 + (129.1 - 68.8) × (w - 16) / 16 s each, and the estimate is not a bound."""
    fake = FakeClock()
    cells = [[(w, d) for w in (16, 32, 64, 128) for d in (0.0, 0.01, 0.1)]]
    clock = CheckClock([1000], [False], cells, clock=fake)
    clock.start()
    _adam_units(clock, fake, (16, 32), (68.8, 129.1))
    line = [68.8 + (129.1 - 68.8) * (w - 16) / 16 for w in (64, 128)]
    assert clock.seconds_left() == pytest.approx(sum(line))
    assert not clock.bounded()


def test_one_width_timed_bounds_the_wider_cells_by_a_cost_proportional_to_the_width():
    """Only width 16 timed (68.8 s for 3000 cell-checks): a check of width 32 costs at most
    twice one of width 16 when the cost is a + b·w with a, b ≥ 0, and at least as much.
    The bar marks the estimate as a bound; Adam's 129.1 s at width 32 is under it."""
    from gdrelu.cli.progress import RunProgress

    fake = FakeClock()
    cells = [[(w, d) for w in (16, 32) for d in (0.0, 0.01, 0.1)]]
    clock = CheckClock([1000], [False], cells, clock=fake)
    bar = RunProgress(6000, clock, enabled=False)
    clock.start()
    _adam_units(clock, fake, (16,), (68.8,))
    assert 129.1 <= clock.seconds_left() == pytest.approx(2 * 68.8)
    assert clock.bounded() and "eta ≤ 02:17" in bar.postfix()


def test_a_flat_cost_is_not_extrapolated_as_a_growing_one():
    """GD on the propagator: width 32's checks cost what width 16's did, so 64's are
    priced the same (the line is flat); a cheaper wider width does not make 64 cheaper
    than either (no negative slope), and a line that would cross zero goes through it."""
    from gdrelu.progress import check_cost

    fake = FakeClock()
    cells = [[(w, d) for w in (16, 32, 64) for d in (0.0, 0.01, 0.1)]]
    clock = CheckClock([1000], [False], cells, clock=fake)
    clock.start()
    _adam_units(clock, fake, (16, 32), (27.0, 27.0))
    assert clock.seconds_left() == pytest.approx(27.0)
    falling = check_cost([((16,), 3.0, 3, 48), ((32,), 1.0, 3, 96)])
    assert falling.seconds(64) == pytest.approx(4.0 / 6)  # the mean rate
    steep = check_cost([((16,), 1.0, 1, 16), ((32,), 4.0, 1, 32)])
    assert steep.intercept == 0.0 and steep.seconds(0) == 0.0


def test_a_batch_s_first_check_is_priced_apart_from_its_checks():
    """A batch's first check also compiles (the run's first batch: 5 s) or draws its
    networks (a later one: 1 s more than its 0.1 s check). Widths 8 and 16 checks then cost
    0.1 s: width 16 owes 8 of them, width 32 (not begun) 10 and its first check's extra
    1 s: 2.8 s. One rate over every check (7.1 s for 12 cell-checks) said 18 × 7.1 / 12."""
    fake = FakeClock()
    clock = CheckClock([10], [False], [[(8, 0.0), (16, 0.0), (32, 0.0)]], clock=fake)
    clock.start()
    _run_checks(clock, fake, 0, (8,), 1, 5.0)
    _run_checks(clock, fake, 0, (8,), 9, 0.1, first=2)
    clock.cell_done(0, (8, 0.0))
    _run_checks(clock, fake, 0, (16,), 1, 1.1)
    _run_checks(clock, fake, 0, (16,), 1, 0.1, first=2)
    assert clock.seconds_left() == pytest.approx(8 * 0.1 + 10 * 0.1 + 1.0)
    assert clock.setup(0) == pytest.approx(1.0)


def test_first_checks_priced_as_checks_add_no_setup():
    """Batches of one check each (a budget of 1): the cost is fitted to the first checks
    (2, 10 and 6 s: 6 s a check), which hold their setup already. The fourth batch is
    priced at 6 s, not 6 s plus the mean excess of the later first checks over 6 s."""
    fake = FakeClock()
    cells = [(8, d) for d in (0.0, 0.1, 0.2, 0.3)]
    clock = CheckClock([1], [False], [cells], clock=fake)
    clock.plan(0, [[cell] for cell in cells])
    clock.start()
    for cell, seconds in zip(cells[:3], (2.0, 10.0, 6.0), strict=True):
        _run_checks(clock, fake, 0, (8,), 1, seconds)
        clock.cell_done(0, cell)
    assert clock.seconds_left() == pytest.approx(6.0)


def test_batches_forecast_or_planned_add_a_setup_only_while_they_can_begin():
    """A grown cell's 3 batches to come (5 checks at 0.1 s each) add the first check's
    1 s beyond its check each; a planned batch whose cell was loaded from its unit will
    never begin and adds nothing, so the estimate reaches 0."""
    fake = FakeClock()
    clock = CheckClock([5], [False], [[(8, 0.0), (16, 0.0)]], clock=fake)
    clock.plan(0, [[(8, 0.0)], [(16, 0.0)]])
    clock.start()
    clock.cell_done(0, (16, 0.0))
    _run_checks(clock, fake, 0, (8,), 1, 1.1)
    _run_checks(clock, fake, 0, (8,), 4, 0.1, first=2)
    assert clock.seconds_left() == pytest.approx(0.0)
    clock.forecast(0, {(8, 0.0): 3})
    assert clock.seconds_left() == pytest.approx(3 * 5 * 0.1 + 3 * 1.0)


def test_a_width_whose_batch_advanced_no_cell_is_not_timed():
    from gdrelu.progress import check_cost

    cost = check_cost([((8,), 1.0, 2, 16), ((16,), 0.5, 0, 0)])
    assert cost.timed == {8} and cost.bound(16)


def test_the_cost_line_is_a_weighted_least_squares_fit():
    """Three batches' rates against their mean widths, weighted by their cell-checks: the
    coefficients of numpy's weighted polyfit (weights are the square roots of the counts,
    as polyfit weighs residuals before squaring them)."""
    import numpy as np

    from gdrelu.progress import check_cost

    batches = [((8,), 2.0, 4, 32), ((16, 32), 9.0, 6, 144), ((64,), 5.0, 2, 128)]
    cost = check_cost(batches)
    n = np.array([4.0, 6.0, 2.0])
    rate = np.array([2.0, 9.0, 5.0]) / n
    width = np.array([32.0, 144.0, 128.0]) / n
    slope, intercept = np.polyfit(width, rate, 1, w=np.sqrt(n))
    assert cost.fitted and cost.slope == pytest.approx(slope)
    assert cost.intercept == pytest.approx(intercept)
    assert check_cost([((8,), 1.0, 0, 0)]) is None


@pytest.mark.parametrize("can_stop", [True, False])
def test_a_cell_at_its_budget_needs_no_more_checks(can_stop):
    """A run never takes more than `max_checks` checks: a cell that has done all 5 of its
    budget (its runs not yet collected) has none left, with or without stop rules."""
    fake = FakeClock()
    clock = CheckClock([5], [can_stop], [[(8, 0.0)]], clock=fake)
    clock.start()
    _run_checks(clock, fake, 0, (8,), 5, 1.0)
    assert clock.checks_left(0) == 0 and clock.seconds_left() == 0.0


def test_a_spec_not_yet_started_is_priced_at_the_rate_measured_on_the_others():
    """Spec 0 ran 2 of its 10 checks at 1.5 s; spec 1 (4 checks, no stop rule) has run
    none: 8 × 1.5 s + 4 × 1.5 s = 18 s are left, not 12 s (spec 1 free) or no estimate."""
    fake = FakeClock()
    clock = CheckClock([10, 4], [False, False], [[(8, 0.0)], [(8, 0.0)]], clock=fake)
    clock.start()
    _run_checks(clock, fake, 0, (8,), 2, 1.5)
    assert clock.seconds_left() == pytest.approx(18.0)


def test_the_bar_says_how_many_specs_its_estimate_has_not_timed():
    """A `compare` said 10 minutes were left when GD's units ended and 68 minutes in all
    were taken: its SGD and Adam checks were priced at GD's rate. The bar says so until
    each spec has been timed; a spec already done (or loaded) is not counted."""
    from gdrelu.cli.progress import RunProgress

    fake = FakeClock()
    cells = [[(8, 0.0)], [(8, 0.0)], [(8, 0.0)]]
    clock = CheckClock([10, 4, 4], [False] * 3, cells, clock=fake)
    bar = RunProgress(30, clock, enabled=False)
    clock.start()
    _run_checks(clock, fake, 0, (8,), 2, 1.5)
    assert clock.untimed() == 2
    assert bar.postfix().endswith("eta 00:24 + 2 untimed")  # (8 + 4 + 4) checks × 1.5 s
    clock.cell_done(2, (8, 0.0))  # loaded from its unit
    _run_checks(clock, fake, 1, (8,), 1, 3.0)
    assert clock.untimed() == 0
    assert bar.postfix().endswith("eta 00:21")  # 8 × 1.5 s + 3 × 3 s, all timed


def test_a_spec_loaded_whole_from_its_units_does_not_make_the_estimate_a_bound():
    """Spec 0 (its runs can stop) was loaded from units, so no check of it was counted,
    but it has nothing left: the estimate, spec 1's budget, is not an upper bound."""
    fake = FakeClock()
    clock = CheckClock([100, 10], [True, False], [[(8, 0.0)], [(8, 0.0)]], clock=fake)
    clock.start()
    clock.cell_done(0, (8, 0.0))
    _run_checks(clock, fake, 1, (8,), 1, 1.0)
    assert not clock.bounded() and clock.seconds_left() == pytest.approx(9.0)


def _with_and_without_plan(cells, batches, checks: int):
    """Two clocks over `cells` of width 8 (a budget of 10 checks, no stop rule), one
    told of `batches`, after `checks` checks of width 8 one second apart."""
    fake = FakeClock()
    planned, unplanned = (CheckClock([10], [False], [cells], clock=fake) for _ in range(2))
    planned.plan(0, batches)
    for each in (planned, unplanned):
        each.start()
    for k in range(1, checks + 1):
        fake.now += 1.0
        for each in (planned, unplanned):
            each.on_check(0, (8,), k)
    return fake, planned, unplanned


def test_a_planned_cell_owes_each_batch_of_it_still_to_come():
    """A memory budget splits two cells (Δ 0 and 0.1 of width 8, 5 runs each, a budget of
    10 checks, no stop rule) into batches of 4 runs: Δ 0's runs 0-3, then its run 4 with
    Δ 0.1's 0-2, then Δ 0.1's 3-4. Four checks into the first batch, Δ 0 owes 6 of it and
    10 of the second, Δ 0.1 10 of each of its two: 36 cell-checks at the 1 s each took.
    Through the second batch, Δ 0 is done (0 left) and Δ 0.1 owes the third (10); once
    the third begins, 9 more. Unplanned, the clock saw only the batch under way: 6 + 6."""
    cells = [(8, 0.0), (8, 0.1)]
    fake, clock, unplanned = _with_and_without_plan(cells, [[cells[0]], cells, [cells[1]]], 4)
    assert clock.checks_left(0) == 6 + 10 + 10 + 10
    assert clock.seconds_left() == pytest.approx(36.0)
    assert unplanned.checks_left(0) == 6 + 6
    _run_checks(clock, fake, 0, (8,), 10, 1.0)
    assert clock.checks_left(0) == 10
    _run_checks(clock, fake, 0, (8,), 1, 1.0)
    assert clock.checks_left(0) == 9


def test_a_batch_takes_the_first_planned_of_its_widths_else_counts_by_widths():
    """A batch of widths no planned batch has leaves the plan queued and advances every
    cell of its widths, as without a plan; one of planned widths takes the first planned
    of them, whatever comes before it (a grown cell's batch, announced as it begins)."""
    fake = FakeClock()
    clock = CheckClock([10], [False], [[(8, 0.0), (16, 0.0)]], clock=fake)
    clock.plan(0, [[(16, 0.0)]])
    clock.start()
    _run_checks(clock, fake, 0, (8,), 3, 1.0)
    assert clock.done[0] == {(8, 0.0): 3, (16, 0.0): 0}
    assert clock.checks_left(0) == 7 + 10  # width 16's planned batch is still to come
    _run_checks(clock, fake, 0, (16,), 2, 1.0)
    assert clock.checks_left(0) == 7 + 8
    later = CheckClock([10], [False], [[(8, 0.0), (16, 0.0)]], clock=fake)
    later.plan(0, [[(16, 0.0)], [(8, 0.0)], [(8, 0.0)]])
    _run_checks(later, fake, 0, (8,), 3, 1.0)
    assert list(later.queued[0]) == [[(16, 0.0)], [(8, 0.0)]]
    assert later.current[0] == [(8, 0.0)] and later.done[0] == {(8, 0.0): 3, (16, 0.0): 0}
    assert later.checks_left(0) == 7 + 10 + 10


def test_the_bar_hands_the_batches_to_the_clock():
    from types import SimpleNamespace

    from gdrelu.cli.progress import RunProgress

    clock = CheckClock([10], [False], [[(8, 0.0), (8, 0.1)]], FakeClock())
    bar = RunProgress(10, clock, enabled=False)
    cell = lambda delta: SimpleNamespace(width=8, delta=delta)  # noqa: E731
    bar.on_batches(0, [[cell(0.0)], [cell(0.0), cell(0.1)]])
    assert list(clock.queued[0]) == [[(8, 0.0)], [(8, 0.0), (8, 0.1)]]


def test_a_planned_batch_that_ended_prices_the_batches_to_come():
    """One cell in three planned batches, with stop rules: while the first runs, nothing
    has ended, and the rest (a budget of 100 checks, 3 done) is a bound: 97 + 2 × 100.
    Once the first ended after 12 checks and the second has done 2, the second is
    expected to need 12 (10 more) and the third 12: 22, an estimate."""
    fake = FakeClock()
    clock = CheckClock([100], [True], [[(8, 0.0)]], clock=fake)
    clock.plan(0, [[(8, 0.0)]] * 3)
    clock.start()
    _run_checks(clock, fake, 0, (8,), 3, 1.0)
    assert clock.checks_left(0) == 97 + 200 and clock.bounded()
    _run_checks(clock, fake, 0, (8,), 9, 1.0, first=4)
    _run_checks(clock, fake, 0, (8,), 2, 1.0)
    assert clock.checks_left(0) == 10 + 12 and not clock.bounded()


def test_a_cell_named_twice_in_a_planned_batch_counts_once():
    """The Section 10 preset's configurations are one (width, Δ) each: a batch of three
    of them is one cell for the clock, priced as without a plan (5 checks at 1 s left
    of its budget of 10), not at a third of a second per check."""
    _, planned, unplanned = _with_and_without_plan([(8, 0.0)], [[(8, 0.0)] * 3], 5)
    assert planned.seconds_left() == unplanned.seconds_left() == pytest.approx(5.0)


def test_the_batches_still_queued_announced_again_are_not_queued_twice():
    """`gdrelu compare` plans every spec's batches ahead; each spec's run announces the
    same batches again as it starts: they are queued once. Other batches (a grown cell's)
    are queued after them."""
    clock = CheckClock([10], [False], [[(8, 0.0), (16, 0.0)]], FakeClock())
    batches = [[(8, 0.0)], [(8, 0.0)], [(16, 0.0)]]
    clock.plan(0, batches)
    clock.plan(0, batches)
    assert list(clock.queued[0]) == batches and clock.waiting[0][(8, 0.0)] == 2
    clock.plan(0, [[(8, 0.0)]])
    assert list(clock.queued[0]) == [*batches, [(8, 0.0)]] and clock.checks_left(0) == 40


def test_a_planned_cell_whose_batches_have_all_ended_owes_no_check():
    """Δ 0's runs are all in the first planned batch, which ended after 12 checks (runs
    that stop early); the second batch trains Δ 0.1's other runs. Before the bucket ends
    (and says Δ 0 is done), Δ 0 owes nothing, not one more check: Δ 0.1, 2 checks in,
    owes the 10 an ended batch took more."""
    fake = FakeClock()
    cells = [(8, 0.0), (8, 0.1)]
    clock = CheckClock([100], [True], [cells], clock=fake)
    clock.plan(0, [cells, [cells[1]]])
    clock.start()
    _run_checks(clock, fake, 0, (8,), 12, 1.0)
    _run_checks(clock, fake, 0, (8,), 2, 1.0)
    assert clock.checks_left(0) == 10


def test_a_grown_cell_owes_the_batches_forecast_after_the_one_beginning():
    """A cell of width 8 grown to a target (a budget of 10 checks, no stop rule): its first
    batch took all 10 checks at 1 s each; the growth forecast (`growth.Forecast`) expects
    3 batches after the one about to begin, which is announced as it begins. Two checks
    into that batch the cell owes 8 of it and 3 × 10 after: 38 s. Without the forecast,
    8; a new forecast replaces the old."""
    fake = FakeClock()
    cell = (8, 0.0)
    clock = CheckClock([10], [False], [[cell]], clock=fake)
    clock.start()
    _run_checks(clock, fake, 0, (8,), 10, 1.0)
    clock.forecast(0, {cell: 3})
    clock.plan(0, [[cell]])
    _run_checks(clock, fake, 0, (8,), 2, 1.0)
    assert clock.checks_left(0) == 8 + 3 * 10
    assert clock.seconds_left() == pytest.approx(38.0)
    clock.forecast(0, {cell: 0})
    assert clock.checks_left(0) == 8
    clock.cell_done(0, cell)
    assert clock.checks_left(0) == 0


def test_an_estimate_past_its_end_is_shown_as_no_time_left():
    """Cells grown past their estimate (a target half-width) leave the clock's seconds
    left below 0: the bar shows eta 00:00, never a negative time."""
    from gdrelu.cli.progress import RunProgress

    class Late:
        budgets = (10,)

        def start(self):
            pass

        def seconds_left(self):
            return -75.0

        def bounded(self):
            return False

        def untimed(self):
            return 0

    assert RunProgress(4, Late(), enabled=False).postfix() == "eta 00:00"
