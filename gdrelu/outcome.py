"""How a run ends: its status, the stop rules that end it, and what `simulate` reports.

The rules, their order and what each proves are in docs/theory.md ("Outcome of a run",
"Provably stuck").
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import numpy as np

from gdrelu.model import Params
from gdrelu.optim import Optimizer


class Status(enum.IntEnum):
    """How a run ended. RUNNING only appears while a simulation is in progress."""

    RUNNING = 0
    CROSSED = 1
    STUCK = 2
    A_DEGENERATE = 3
    X_DEGENERATE = 4
    EARLY_STOPPED = 5
    DIVERGED = 6
    UNFINISHED = 7

    @property
    def label(self) -> str:
        return self.name.lower()

    def __str__(self) -> str:  # runs.csv's word, where an IntEnum would print its number
        return self.label

    def __format__(self, spec: str) -> str:
        try:
            return format(self.label, spec)
        except ValueError:  # a number's format ("d", "03"): the number
            return int.__format__(self, spec)


def status_counts(status: np.ndarray) -> dict[str, int]:
    """Counts of every final status by lowercase name (zeros included)."""
    status = np.asarray(status)
    return {s.label: int(np.sum(status == s)) for s in Status if s != Status.RUNNING}


def with_diverged_escaped(escaped: np.ndarray, status: np.ndarray) -> np.ndarray:
    """`escaped` with every diverged run's true: its regime is undefined, whether its
    parameters are NaN or it diverged with finite ones and an infinite loss (which the
    detectors alone classify by its pattern)."""
    return np.asarray(escaped) | (np.asarray(status) == Status.DIVERGED)


STOP_RULES = ("crossed", "stuck", "degenerate")
PROOF_RULES = frozenset({"stuck", "degenerate"})  # the certificate's: their statuses are proofs
STUCK_STATUSES = (Status.STUCK, Status.A_DEGENERATE, Status.X_DEGENERATE)  # proven stuck


class SimulationResult(NamedTuple):
    """Per-run outcome of `simulate`, as numpy arrays with a leading runs axis."""

    status: np.ndarray  # Status codes, int8
    stop_step: np.ndarray  # steps taken when the run stopped (a multiple of check_every)
    params: Params  # final parameters
    max_kink: np.ndarray  # max over steps and neurons of |b_i/(s_a a_i)| (d-D: |b_i|/‖s_a a_i‖)
    final_loss: np.ndarray  # training loss at the final parameters
    pattern_change_step: np.ndarray  # first step whose activation pattern differs; -1: none
    loss_below_step: np.ndarray  # first step with final_loss-style training loss below
    # (1 - detectors.ESCAPE_MARGIN) * linear_threshold, checked after every step; -1: none
    linear_threshold: np.ndarray  # L_lin: the loss of the linear-regime minimum
    escaped: np.ndarray  # final classification (`detectors`); True for a diverged run too
    best_validation_loss: np.ndarray  # best validation loss over the checks (without
    # validation points or weights: of the training loss)
    test_loss_at_best: np.ndarray  # test loss at that check (NaN without test points)
    best_step: np.ndarray  # the step of that check
    certificate_checked: np.ndarray  # bool: whether the run was checked against both of
    # the certificate's stop rules, stuck and degenerate (`stuck("certificate")` needs it)

    def __repr__(self) -> str:
        """Runs, width and status counts: the arrays of a thousand runs printed whole
        filled a notebook's screen many times over."""
        counts = ", ".join(f"{k}={n}" for k, n in status_counts(self.status).items() if n)
        width = np.shape(self.params.b)[-1] if np.ndim(self.params.b) else "?"
        runs = np.size(self.status)
        return f"SimulationResult(runs={runs}, width={width}, {counts or 'no runs'})"

    def stuck(self, rule: str = "certificate") -> np.ndarray:
        """Which runs are stuck, bool (runs,) (docs/theory.md, "Outcome of a run"):
        "certificate", those GD's certificate proved stuck or found degenerate
        (`STUCK_STATUSES`), refused (ValueError) unless every run was checked against its
        rules (`certificate_checked`); "final", also those whose final network is still in
        the linear regime (not `escaped`), the rule where no proof exists. Neither counts a
        diverged run, nor one the crossing rule stopped: it was halted where it may escape,
        before its budget, so its last network is no final one. With
        `simulate(eigenvectors="rows")` "stuck" is the reference code's certificate, which
        reads rows of U as eigenvectors: its count, not a proof (docs/fidelity.md)."""
        certified = np.isin(self.status, STUCK_STATUSES)
        if rule == "certificate":
            unchecked = int(np.size(self.status) - np.count_nonzero(self.certificate_checked))
            if unchecked:
                raise ValueError(
                    f"rule: 'certificate' counts the stuck and degenerate statuses, but "
                    f"{unchecked} of {np.size(self.status)} runs were never checked for them "
                    "(stop_on lacked stuck or degenerate, or the certificate is no proof for "
                    "this optimizer and data); use 'final'"
                )
            return certified
        if rule == "final":
            halted = np.isin(self.status, (Status.DIVERGED, Status.CROSSED))
            return certified | (~np.asarray(self.escaped) & ~halted)
        raise ValueError(f"rule: {rule!r} is not 'certificate' or 'final'")


def not_rules(unknown) -> str:
    """The refusal of stop rules that are not in `STOP_RULES`, as for other settings."""
    names = ", ".join(map(repr, unknown))
    return f"{names} {'is' if len(unknown) == 1 else 'are'} not one of {', '.join(STOP_RULES)}"


def stop_rules(
    stop_on, optimizer: Optimizer, standard: bool, one_dimensional, eigenvectors, early_stopping
) -> tuple[str, ...]:
    """The checks to apply: `stop_on` (default: those valid for the optimizer and the
    parameterization) and flags ("reference_rows", "early_stopping")."""
    proven = optimizer.certificate and standard and one_dimensional
    if stop_on is None:
        stop_on = STOP_RULES if proven else ()
    rules = tuple(sorted(set(stop_on)))
    unknown = [rule for rule in rules if rule not in STOP_RULES]
    if unknown:
        raise ValueError(f"stop_on: {not_rules(unknown)}")
    proofs = PROOF_RULES & set(rules)
    if proofs and not proven:
        raise ValueError(
            f"stop_on: {sorted(proofs)} are proofs for full-batch GD on 1-D data in the "
            f"standard parameterization only (here: {optimizer.name!r}, "
            f"{'1-D' if one_dimensional else 'd-dim'} data)"
        )
    if eigenvectors not in ("columns", "rows"):
        raise ValueError(f"eigenvectors must be 'columns' or 'rows', not {eigenvectors!r}")
    if eigenvectors == "rows":
        rules += ("reference_rows",)
    if early_stopping:
        rules += ("early_stopping",)
    return rules
