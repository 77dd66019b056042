"""The progress bar of a command: finished runs by status, and the time left from the
checks done and left per cell (`gdrelu.progress.CheckClock`), not from finished runs."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from gdrelu.analysis import status_counts
from gdrelu.cli import interrupt
from gdrelu.progress import CheckClock, widths_text

BAR = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"
REFRESH_SECONDS = 1.0  # the longest a check's news waits to be drawn
LOG_SECONDS = 30.0  # the same where stderr is no terminal (a batch job's log): fewer lines


def is_terminal(stream) -> bool:
    """Whether `stream` is a terminal (a bar redrawn in place), not a file or pipe (a log
    that keeps every state it is sent)."""
    return bool(getattr(stream, "isatty", lambda: False)())


class RunProgress:
    """A bar over `total` runs; `clock` prices the checks left. Spec s's checks are
    labelled `labels[s]`."""

    def __init__(
        self, total: int, clock: CheckClock, *, enabled: bool, labels=None, file=None
    ) -> None:
        import sys

        from tqdm.auto import tqdm

        terminal = is_terminal(file if file is not None else sys.stderr)
        self.every = REFRESH_SECONDS if terminal else max(REFRESH_SECONDS, LOG_SECONDS)
        self.bar = tqdm(
            total=total,
            unit="run",
            disable=not enabled,
            dynamic_ncols=True,
            bar_format=BAR,
            file=file,
            mininterval=0.1 if terminal else self.every,  # 0.1: tqdm's default
        )
        self.clock = clock
        self.labels = labels or [""] * len(clock.budgets)
        self.counts: dict[str, int] = {}  # final statuses of the cells done
        self.finished_in_batch = 0
        self.done = 0  # runs of the cells done
        self.stored = 0  # of them, runs read back from their units (a resume)
        self.added: dict[tuple[int, tuple[int, float]], int] = {}  # forecast, by spec, cell
        self.drawn = time.monotonic()
        clock.start()

    def on_check(self, spec: int, widths, k: int, status: np.ndarray) -> None:
        """After check `k` of a batch of spec `spec`'s `widths`; `status` of its runs."""
        from gdrelu.engine import Status

        interrupt.raise_if_pending()

        self.clock.on_check(spec, widths, k)
        self.bar.set_description(f"{self.labels[spec]}n={widths_text(widths)} check {k}",
                                 refresh=False)  # fmt: skip
        self._show(status)
        finished = int(np.sum(status != Status.RUNNING))
        self._advance(finished - self.finished_in_batch)
        self.finished_in_batch = finished
        self._draw_if_due()

    def on_batches(self, spec: int, batches: Sequence[Sequence]) -> None:
        """Spec `spec` will train `batches` (each a list of `cells.Cell`): the clock prices
        the batches to come (`CheckClock.plan`)."""
        self.clock.plan(spec, [[(cell.width, cell.delta) for cell in batch] for batch in batches])
        self._show()

    def on_forecast(self, spec: int, forecasts) -> None:
        """Spec `spec`'s cells grown to a target are expected to end with `added` runs
        beyond their first batch, after `later` more batches (`growth.Forecast` by (width,
        Δ)): the bar's total and the clock follow the latest forecast."""
        change = 0
        for cell, forecast in forecasts.items():
            change += forecast.added - self.added.get((spec, cell), 0)
            self.added[(spec, cell)] = forecast.added
        self.bar.total = max(self.bar.n, self.bar.total + change)
        self.clock.forecast(spec, {cell: forecast.later for cell, forecast in forecasts.items()})
        self._show()

    def _draw_if_due(self) -> None:
        """Draw the bar if it has not been drawn for `REFRESH_SECONDS` (`LOG_SECONDS`
        where stderr is no terminal: a log would keep every state). tqdm draws on progress
        only, and after fast progress only every so many runs: while no run finishes (a
        whole budget, after cells that stopped fast) its check and ETA would stay as they
        were for hours."""
        now = time.monotonic()
        if now - self.drawn >= self.every:
            self.bar.refresh()
            self.drawn = now

    def on_cells_done(self, spec: int, cell_results: Sequence) -> None:
        """Spec `spec`'s `cell_results` have finished training: the batch is done."""
        interrupt.raise_if_pending()
        self._count(spec, cell_results)
        # the runs the checks did not see: the other processes' shares (--distributed)
        self._advance(max(0, self.done - self.bar.n))
        self.finished_in_batch = 0
        self._show()

    def on_stored(self, spec: int, cell_results: Sequence) -> None:
        """Spec `spec`'s `cell_results` were loaded from their unit: done, not timed. A
        cell that `target_halfwidth` grew adds its runs beyond the first batch to the total
        (else the bar would read 100% while the cells left train their first batches)."""
        runs = sum(cr.result.status.size for cr in cell_results)
        self.bar.total += runs - sum(cr.cell.spec.runs for cr in cell_results)
        self.stored += runs
        self._advance(runs)
        self._count(spec, cell_results)
        self._show()
        self.clock.start()

    def _count(self, spec: int, cell_results: Sequence) -> None:
        self.done += sum(cr.result.status.size for cr in cell_results)
        self.finished(spec, [(cr.cell.width, cr.cell.delta) for cr in cell_results])
        for cr in cell_results:
            for label, count in status_counts(cr.result.status).items():
                self.counts[label] = self.counts.get(label, 0) + count

    def finished(self, spec: int, cells: Sequence[tuple[int, float]]) -> None:
        """Spec `spec`'s `cells` (width, Δ) need no more checks."""
        for cell in cells:
            self.clock.cell_done(spec, cell)

    def postfix(self, status: np.ndarray | None = None) -> str:
        """Finished runs by status (those of the cells done and of `status`), and the ETA."""
        shown = dict(self.counts)
        if status is not None:
            for label, count in status_counts(status).items():
                shown[label] = shown.get(label, 0) + count
        parts = [f"{label}={count}" for label, count in shown.items() if count]
        left = self.clock.seconds_left()
        if left is not None:  # past its estimate (cells grown to a target): 0, not negative
            bound = "≤ " if self.clock.bounded() else ""  # CheckClock.bounded says when
            untimed = self.clock.untimed()  # priced at the timed specs' rate
            guess = f" + {untimed} untimed" if untimed else ""
            parts.append(f"eta {bound}{self.bar.format_interval(max(0.0, left))}{guess}")
        return ", ".join(parts)

    def _advance(self, runs: int) -> None:
        """`runs` more finished; the total grows with cells that `target_halfwidth` grew."""
        if self.bar.total is not None and self.bar.n + runs > self.bar.total:
            self.bar.total = self.bar.n + runs
        self.bar.update(runs)

    def _show(self, status: np.ndarray | None = None) -> None:
        self.bar.set_postfix_str(self.postfix(status), refresh=False)

    def close(self) -> None:
        self.bar.close()


def finished_line(
    runs: int, seconds: float, before: float, backend: str, out, stored: int = 0
) -> str:
    """The last line of a run: `seconds` in all, `before` of them before a resume, which
    read `stored` of the runs back (all of them: the run had finished before it)."""
    earlier = f" ({before:.1f} s of it before the resume)" if before else ""
    if before and stored >= runs:
        earlier = ", all trained before the resume,"
    return f"{runs} runs in {seconds:.1f} s{earlier} on {backend}; results in {out}/"
