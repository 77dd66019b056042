"""How far the progress bar's ETA is from the time a command actually took.

Runs a `gdrelu` command in this process and records every call it makes on its progress
clock (`gdrelu.progress.CheckClock`), with its time. Then replays the calls through the
clock and prints, at each twentieth of the run, the ETA the bar would have shown against
the seconds that were in fact left. `--against FILE` replays them through a second
version of `gdrelu/progress.py` too (`git show REV:gdrelu/progress.py > FILE`), so two
clocks are compared on one run; `--calls P` replays a recording written by `--record P`
without running anything.

    PYTHONPATH=. python benchmarks/bench_eta.py [--record P] [--against FILE] [--plot PNG] \\
        -- compare ...
    PYTHONPATH=. python benchmarks/bench_eta.py --calls P [--against FILE] [--plot PNG]
"""

from __future__ import annotations

import argparse
import bisect
import importlib.util
import json
import sys
import time

from gdrelu.progress import widths_text

CALLS = ("start", "on_check", "plan", "forecast", "cell_done")


def record(argv: list[str]) -> list:
    """Run `gdrelu argv` here; the clock's calls as [time, method, arguments]."""
    import numpy as np

    from gdrelu import progress
    from gdrelu.cli import main

    calls: list = []

    def listed(value):  # a dict (`forecast`'s, keyed by cells) as its items
        if isinstance(value, dict):
            return [[listed(k), listed(v)] for k, v in value.items()]
        if isinstance(value, (list, tuple)):
            return [listed(v) for v in value]
        return np.asarray(value).tolist()

    def recorded(name, method):
        def call(self, *args, **kwargs):
            calls.append([time.perf_counter(), name, listed(args)])
            return method(self, *args, **kwargs)

        return call

    methods = {name: getattr(progress.CheckClock, name) for name in ("__init__", *CALLS)}
    for name, method in methods.items():
        setattr(progress.CheckClock, name, recorded(name, method))
    try:
        code = main(argv)
        calls.append([time.perf_counter(), "end", []])
    finally:  # the replay's clocks are not recorded
        for name, method in methods.items():
            setattr(progress.CheckClock, name, method)
    if code:
        sys.exit(f"gdrelu {' '.join(argv)} exited with {code}")
    return calls


def _arguments(name: str, args: list) -> list:
    """A recorded call's arguments as the clock takes them: cells as (width, Δ) tuples."""
    if name == "__init__":
        return [*args[:2], [[tuple(c) for c in cells] for cells in args[2]]]
    if name == "cell_done":
        return [args[0], tuple(args[1])]
    if name == "plan":
        return [args[0], [[tuple(c) for c in batch] for batch in args[1]]]
    if name == "forecast":
        return [args[0], {tuple(k): v for k, v in args[1]}]
    return args


def replay(calls: list, modules: dict) -> list:
    """Each check's time and arguments, and every module's (ETA, bounded) after it; the
    checks after which some clock has no estimate yet (no cell-check timed) are left out."""
    now = [0.0]
    clocks: dict = {}
    rows = []
    for at, name, args in calls:
        now[0] = at
        if name == "end":
            break
        args = _arguments(name, args)
        if name == "__init__":
            clocks = {k: m.CheckClock(*args, clock=lambda: now[0]) for k, m in modules.items()}
            continue
        for clock in clocks.values():
            getattr(clock, name)(*args)
        if name == "on_check":
            estimates = {k: (c.seconds_left(), c.bounded()) for k, c in clocks.items()}
            if all(eta is not None for eta, _ in estimates.values()):
                rows.append((at, args, estimates))
    return rows


def table(rows: list, end: float, points: int = 20) -> str:
    """The ETA against the time left at each 1/`points` of the run (`replay`'s `rows`, the
    run ending at `end`), as a Markdown table."""
    first = rows[0][0]
    times = [row[0] for row in rows]
    names = list(rows[0][2])
    lines = [
        f"{len(rows)} checks, {end - first:.1f} s from the first to the end",
        "",
        "| elapsed | at | seconds left | " + " | ".join(f"ETA {n} (ratio)" for n in names) + " |",
        "|---|---|---:|" + "---:|" * len(names),
    ]
    for i in range(1, points):
        at, (spec, widths, k), estimates = rows[
            min(bisect.bisect_left(times, first + i / points * (end - first)), len(rows) - 1)
        ]
        left = end - at
        shown = [
            f"{'≤ ' if bound else ''}{eta:.1f} ({eta / left:.2f})"
            for eta, bound in (estimates[n] for n in names)
        ]
        where = f"spec {spec}, width {widths_text(widths)}, check {k}"
        lines.append(f"| {i / points:.0%} | {where} | {left:.1f} | " + " | ".join(shown) + " |")
    lines += [
        "",
        *(
            f"ETA {n}: {within(rows, end, n):.0%} of the run within 1.5× of the time left"
            for n in names
        ),
    ]
    return "\n".join(lines)


def within(rows: list, end: float, name: str, factor: float = 1.5) -> float:
    """The share of the run's time (from its first check) during which clock `name`'s
    ETA, as shown after the latest check, was within `factor` of the seconds left."""
    good = 0.0
    for (at, _, estimates), (then, *_) in zip(rows, [*rows[1:], (end,)], strict=True):
        eta, left = estimates[name][0], end - at
        good += (then - at) * (left / factor <= eta <= left * factor)
    return good / (end - rows[0][0])


def figure(rows: list, end: float, path: str) -> None:
    """Every check's ETA against the seconds that were in fact left, over the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = rows[0][0]
    elapsed = [at - first for at, *_ in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(elapsed, [end - at for at, *_ in rows], "k-", label="seconds in fact left")
    for name in rows[0][2]:
        ax.plot(elapsed, [estimates[name][0] for *_, estimates in rows], label=f"ETA {name}")
    ax.set(xlabel="seconds since the first check", ylabel="seconds left", yscale="log")
    ax.set_ylim(max(1.0, 0.05 * (end - first)), 20 * (end - first))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", help="write the clock's calls to this JSON file")
    parser.add_argument("--calls", help="replay this recording instead of running")
    parser.add_argument("--against", help="a second progress.py to replay the calls through")
    parser.add_argument("--plot", help="draw every check's ETA over the run to this PNG")
    parser.add_argument("command", nargs="*", help="the gdrelu command, after --")
    args = parser.parse_args()
    if bool(args.calls) == bool(args.command):
        parser.error("give a gdrelu command after --, or --calls, not both")
    if args.calls:
        with open(args.calls) as f:
            calls = json.load(f)
    else:
        calls = record(args.command)
    if args.record:
        with open(args.record, "w") as f:
            json.dump(calls, f)
    from gdrelu import progress

    modules = {"now": progress}
    if args.against:
        spec = importlib.util.spec_from_file_location("progress_against", args.against)
        modules["against"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(modules["against"])
    rows = replay(calls, modules)
    if not rows:
        sys.exit("no check was timed (a command resumed whole, or one that failed first)")
    print(table(rows, calls[-1][0]))
    if args.plot:
        figure(rows, calls[-1][0], args.plot)


if __name__ == "__main__":
    main()
