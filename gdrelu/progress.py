"""Progress of a long run: finished runs by status, and an ETA from checks, not runs.

A cell's runs go through checks together (one every `check_every` steps), and a check
of a wide network or of a slow optimizer costs much more than one of a narrow GD run.
An ETA from finished runs is wrong both ways: narrow cells finish many runs fast (the
paper figure said 30 minutes when 10 s were left), and runs that cannot stop early finish
all at once at the end (a `compare` said 1:44 when 15 minutes were left). `CheckClock`
instead estimates, per cell not yet done, the checks it still needs, and prices them
at the seconds per check measured on its spec so far, as a function of the cell's width
(`CheckCost`): a check of an Adam run costs about twice at twice the width, one of a GD run
on the propagator almost the same.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from gdrelu.spec import ExperimentSpec


class CheckCost(NamedTuple):
    """Seconds a check of one cell of width w costs: `intercept + slope · w`, fitted to the
    batches timed, the batches of the same widths merged into one point (their cells' mean
    width, their seconds per cell-check) weighted by its cell-checks, with neither
    coefficient negative. While the batches timed have one
    mean width (`fitted` false), a cell of a width timed costs their rate (`intercept`),
    and one of another width at most that rate times max(1, w / the mean width): the
    most a cost affine in the width with both coefficients ≥ 0 allows."""

    intercept: float
    slope: float
    mean_width: float
    timed: frozenset[int]  # the widths of the batches timed
    fitted: bool

    def seconds(self, width: int) -> float:
        if self.bound(width):
            return self.intercept * max(1.0, width / self.mean_width)
        return self.intercept + self.slope * width

    def bound(self, width: int) -> bool:
        """Whether `seconds(width)` is an upper bound rather than an estimate."""
        return not self.fitted and width not in self.timed


def check_cost(batches: Sequence[tuple[Sequence[int], float, int, int]]) -> CheckCost | None:
    """The `CheckCost` of batches timed as (widths, seconds, cell-checks, the cell-checks'
    widths summed); None when none has a cell-check."""
    points = [(s, n, w) for _, s, n, w in batches if n]
    if not points:
        return None
    timed = frozenset(int(w) for widths, _, n, _ in batches if n for w in widths)
    checks = sum(n for _, n, _ in points)
    rate = sum(s for s, _, _ in points) / checks
    mean = sum(w for _, _, w in points) / checks
    spread = sum(n * (w / n - mean) ** 2 for _, n, w in points)
    if spread <= 1e-12 * mean * mean:
        return CheckCost(rate, 0.0, mean, timed, fitted=False)
    slope = sum((w / n - mean) * (s - n * rate) for s, n, w in points) / spread
    if slope <= 0.0:
        return CheckCost(rate, 0.0, mean, timed, fitted=True)
    if rate - slope * mean < 0.0:  # through the origin instead
        slope = sum(s * w / n for s, n, w in points) / sum(w * w / n for _, n, w in points)
        return CheckCost(0.0, slope, mean, timed, fitted=True)
    return CheckCost(rate - slope * mean, slope, mean, timed, fitted=True)


class CheckClock:
    """Checks done and left per cell, and the time they take.

    `budgets[s]` is spec s's check budget (`max_checks`), `can_stop[s]` whether its runs
    can stop before it (stop rules or early stopping), `cells[s]` its cells as (width, Δ).
    A cell's batch that cannot stop early needs its whole budget; one that can is
    expected to need as many checks as the slowest batch of a finished cell of its spec,
    or the slowest planned batch that has ended, needed, and at least one more than it
    has done (the whole budget while none has). A check of a batch advances each of its
    cells; its time is shared among them. A cell trained in several batches (a memory
    budget, a target half-width) owes the rest of the batch under way and, for each batch
    `plan` announced that it is in and that has not begun, the checks expected of a
    batch; without a plan, the batch under way alone. A cell grown to a target also owes
    the batches `forecast` expects after those. A check is priced by the cell's width
    (`costs`), fitted to the checks of each batch after its first (to the first checks while
    no batch has had more): the first also compiles and draws the batch's networks, and
    each batch not yet begun adds what the spec's first checks took beyond their check
    (`setup`).
    """

    def __init__(
        self,
        budgets: Sequence[int],
        can_stop: Sequence[bool],
        cells: Sequence[Sequence[tuple[int, float]]],
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.budgets, self.can_stop, self.clock = list(budgets), list(can_stop), clock
        self.done = [dict.fromkeys(spec_cells, 0) for spec_cells in cells]  # this batch's
        self.most = [dict.fromkeys(spec_cells, 0) for spec_cells in cells]  # any batch's
        self.finished: list[set[tuple[int, float]]] = [set() for _ in cells]
        self.queued: list[deque[list[tuple[int, float]]]] = [deque() for _ in cells]
        self.current: list[list[tuple[int, float]] | None] = [None for _ in cells]
        # batches still queued per cell; a cell ever planned stays a key (count 0 once begun)
        self.waiting: list[Counter[tuple[int, float]]] = [Counter() for _ in cells]
        self.ended: list[list[int]] = [[] for _ in cells]  # checks of planned batches done
        self.later: list[dict[tuple[int, float], int]] = [{} for _ in cells]  # forecast
        self.last_k = [0 for _ in cells]
        self.cell_checks = [0 for _ in cells]  # checks done, summed over the spec's cells
        # per spec and batch widths, for batches' first checks and for the later ones:
        # [seconds in them, cell-checks, their widths summed]
        self.timed: list[dict[tuple[int, ...], list[list]]] = [{} for _ in cells]
        # each batch's first check: its seconds and the widths of the cells it advanced
        self.setups: list[list[tuple[float, list[int]]]] = [[] for _ in cells]
        self._last: float | None = None

    def start(self) -> None:
        """Start the clock, or restart it after a pause (loading stored units, say)."""
        self._last = self.clock()

    def on_check(self, spec: int, widths: Sequence[int], k: int) -> None:
        """Check `k` (from 1) of the batch of `widths` of spec `spec` is done."""
        now = self.clock()
        seconds = now - self._last if self._last is not None else 0.0
        self._last = now
        widths = {int(w) for w in np.atleast_1d(widths)}
        timed = self.timed[spec].setdefault(tuple(sorted(widths)), [[0.0, 0, 0], [0.0, 0, 0]])
        tally = timed[k > 1]
        tally[0] += seconds
        queued = self.queued[spec]
        if k == 1:  # a batch begins: the first planned of these widths, if any
            if self.current[spec] is not None:  # the planned batch before it has ended
                self.ended[spec].append(self.last_k[spec])
            at = [i for i, batch in enumerate(queued) if {c[0] for c in batch} == widths]
            self.current[spec] = queued[at[0]] if at else None
            if at:
                del queued[at[0]]
                self.waiting[spec].subtract(self.current[spec])
        self.last_k[spec] = k
        advanced = self.current[spec] or [c for c in self.done[spec] if c[0] in widths]
        for cell in advanced:
            if cell not in self.finished[spec]:
                self.done[spec][cell] = k
                self.most[spec][cell] = max(self.most[spec][cell], k)
                self.cell_checks[spec] += 1
                tally[1] += 1
                tally[2] += cell[0]
        if k == 1:
            self.setups[spec].append(
                (seconds, [c[0] for c in advanced if c not in self.finished[spec]])
            )

    def plan(self, spec: int, batches: Sequence[Sequence[tuple[int, float]]]) -> None:
        """Spec `spec` will train these batches; each holds the cells (width, Δ) whose runs
        it trains. A batch that begins takes the first planned of its widths: a cell grown
        to a target announces its batches as they begin, before later buckets' planned
        ones. A cell named twice in a batch (the Section 10 preset's configurations, one
        (width, Δ) each) counts once. The batches still queued, announced again (ahead of
        the run, then by it), are not queued twice."""
        announced = [list(dict.fromkeys((int(w), float(d)) for w, d in b)) for b in batches]
        if announced == list(self.queued[spec]):
            return
        for cells in announced:
            self.queued[spec].append(cells)
            self.waiting[spec].update(cells)

    def forecast(self, spec: int, later: dict[tuple[int, float], int]) -> None:
        """Cells of spec `spec` grown to a target are expected to take `later[cell]`
        batches after the one beginning (`growth.Forecast`), each priced as a batch."""
        self.later[spec].update(later)

    def cell_done(self, spec: int, cell: tuple[int, float]) -> None:
        """Every run of `cell` of spec `spec` has finished (or was loaded from a unit)."""
        self.finished[spec].add(cell)

    def checks_left(self, spec: int) -> int:
        """The checks spec `spec`'s unfinished cells are expected to need still, summed."""
        return sum(self._cells_left(spec).values())

    def _cells_left(self, spec: int) -> dict[tuple[int, float], int]:
        """The checks each unfinished cell of spec `spec` is expected to need still."""
        budget = self.budgets[spec]
        ran = self._measured(spec)
        expected = max(ran) if self.can_stop[spec] and ran else budget
        current = self.current[spec] or ()
        left = {}
        for cell, n in self.done[spec].items():
            if cell in self.finished[spec]:
                continue
            under_way = max(0, max(expected, min(n + 1, budget)) - n)
            if cell in self.waiting[spec]:  # planned
                queued = self.waiting[spec][cell]
                under_way = queued * expected + (under_way if cell in current else 0)
            left[cell] = under_way + self.later[spec].get(cell, 0) * expected
        return left

    def _measured(self, spec: int) -> list[int]:
        """The checks the slowest batch of each finished cell of spec `spec` took here (not
        loaded from a unit), and those each planned batch that has ended took."""
        most = self.most[spec]
        return [most[c] for c in self.finished[spec] if most.get(c)] + self.ended[spec]

    def bounded(self) -> bool:
        """Whether `seconds_left` is an upper bound rather than an estimate: some spec
        whose runs can stop early has no cell whose checks were counted here, so its
        unfinished cells are priced at their whole budget; or some timed spec has cells
        left of a width it has not timed, while it has timed one mean width (`CheckCost`)."""
        return any(
            self.can_stop[spec]
            and not self._measured(spec)
            and any(c not in self.finished[spec] for c in self.done[spec])
            for spec in range(len(self.done))
        ) or any(
            self.cell_checks[spec]
            and any(n and cost.bound(cell[0]) for cell, n in self._cells_left(spec).items())
            for spec, cost in enumerate(self.costs())
        )

    def untimed(self) -> int:
        """The specs with cells left none of whose checks have run here: `seconds_left`
        prices them by the line fitted to the other specs' checks, which may be far from
        theirs (a `compare`'s Adam checks cost many times GD's)."""
        return sum(
            not checks and any(c not in self.finished[spec] for c in self.done[spec])
            for spec, checks in enumerate(self.cell_checks)
        )

    def costs(self) -> list[CheckCost | None]:
        """What a check costs on each spec: fitted to its batches timed, else to every
        spec's (that fit made once; None before the first check)."""
        pooled = check_cost(self._batches(range(len(self.timed))))
        return [
            check_cost(self._batches([spec])) if checks else pooled
            for spec, checks in enumerate(self.cell_checks)
        ]

    def _batches(self, specs) -> list[tuple[tuple[int, ...], float, int, int]]:
        """The batches of `specs` timed, as `check_cost` takes them: their checks after the
        first, or while none of them has more, their first. A batch's first check also
        compiles and draws its networks (`setup`)."""
        timed = [(w, batch) for s in specs for w, batch in self.timed[s].items()]
        if any(map(self._timed_later, specs)):
            return [(w, *batch[1]) for w, batch in timed if batch[1][1]]
        return [(w, *batch[0]) for w, batch in timed]

    def _timed_later(self, spec: int) -> bool:
        """Whether a batch of spec `spec` has had a cell-check after its first check."""
        return any(later[1] for _, later in self.timed[spec].values())

    def setup(self, spec: int) -> float:
        """The seconds a batch of spec `spec` not yet begun is expected to add in its first
        check, beyond the check itself: the mean such excess of the spec's batches after
        its first (which also compiled), else of its first, else the same over every
        spec."""
        return _setups(self._excesses(self.costs()))[spec]

    def _excesses(self, costs: Sequence[CheckCost | None]) -> list[list[float]]:
        """Each spec's first checks, each less what its cells' check costs (`costs[s]`);
        none where the spec's cost was fitted to its first checks (no later check timed),
        which holds their excess already."""
        return [
            [max(0.0, seconds - sum(cost.seconds(w) for w in widths)) for seconds, widths in setups]
            if self._timed_later(spec)
            else [0.0] * len(setups)
            for spec, (setups, cost) in enumerate(zip(self.setups, costs, strict=True))
        ]

    def _batches_left(self, spec: int) -> int:
        """The batches of spec `spec` not yet begun: those planned with a cell unfinished,
        one per width of the unfinished cells no batch has advanced that no plan names (a
        bucket of several widths trains them in one: an overcount without a plan), and
        per width those `forecast` expects of its cells."""
        finished = self.finished[spec]
        planned = sum(any(c not in finished for c in batch) for batch in self.queued[spec])
        unplanned = {
            c[0]
            for c, n in self.done[spec].items()
            if not n and c not in finished and c not in self.waiting[spec]
        }
        grown: dict[int, int] = {}
        for cell, later in self.later[spec].items():
            if cell not in finished:
                grown[cell[0]] = max(grown.get(cell[0], 0), later)
        return planned + len(unplanned) + sum(grown.values())

    def seconds_left(self) -> float | None:
        """Estimated seconds until every cell is done (None before the first check): each
        cell's checks left at the seconds per check of its width on its spec (`costs`), and
        each batch not yet begun at its spec's `setup`."""
        if not any(self.cell_checks):
            return None
        costs = self.costs()
        setups = _setups(self._excesses(costs))
        left = 0.0
        for spec, cost in enumerate(costs):
            left += sum(cost.seconds(cell[0]) * n for cell, n in self._cells_left(spec).items())
            left += setups[spec] * self._batches_left(spec)
        return left


def _setups(excesses: Sequence[list[float]]) -> list[float]:
    """`CheckClock.setup` of every spec, from every spec's first checks' excesses."""

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    later = [t for e in excesses for t in e[1:]]
    pooled = mean(later) if later else mean([t for e in excesses for t in e] or [0.0])
    return [mean(e[1:] or e) if e else pooled for e in excesses]


def progress_after(on_check, before: np.ndarray, widths, k, status) -> None:
    """`on_check` of a later batch: the earlier batches' final statuses come first."""
    on_check(widths, k, np.concatenate([before, status]))


def widths_text(widths) -> str:
    """A batch's widths as a progress line names them: "16,32" (a tuple, or one width)."""
    return ",".join(map(str, np.atleast_1d(widths)))


def can_stop_early(spec: ExperimentSpec) -> bool:
    """Whether a run of `spec` can stop before `max_checks`: it has stop rules (its own
    `stop_on`, else those the engine applies by default, `ExperimentSpec.stop_rules`) or
    early stopping."""
    return bool(spec.stop_rules) or spec.early_stopping


def spec_clock(
    specs: Sequence[ExperimentSpec], clock: Callable[[], float] = time.perf_counter
) -> CheckClock:
    """A `CheckClock` over every cell of `specs` (spec s's cells as (width, Δ))."""
    return CheckClock(
        [spec.max_checks for spec in specs],
        [can_stop_early(spec) for spec in specs],
        [[(cell.width, cell.delta) for cell in spec.cells()] for spec in specs],
        clock=clock,
    )
