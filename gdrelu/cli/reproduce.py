"""`gdrelu reproduce`: every experiment of the paper (`gdrelu.reproduce`) into one report,
resumable; at the paper's scale the estimated time is printed before anything runs."""

from __future__ import annotations

import sys
import time

from gdrelu.cli import backends, interrupt, options, outdir
from gdrelu.cli.errors import Interrupted, UsageError
from gdrelu.numbers import first_repeated


def _names(args) -> tuple[str, ...]:
    from gdrelu.reproduce import EXPERIMENTS

    if args.only is None:
        return EXPERIMENTS
    names = tuple(v.strip() for v in args.only.split(","))
    if not all(names):  # a typo such as gd-figure,,sgd
        raise UsageError(f"--only: {args.only!r} has an empty item")
    twice = first_repeated(names)
    if twice is not None:
        raise UsageError(f"--only: {args.only!r} names {twice} twice")
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise UsageError(f"--only: {', '.join(unknown)} not among {', '.join(EXPERIMENTS)}")
    return names


def _manifest(args, started: dict | None) -> dict:
    """The manifest: on --resume the recorded scale and experiments, else the flags'."""
    from gdrelu import provenance
    from gdrelu.reproduce import SCALES

    if started is not None and args.resume is not None:
        recorded = started["specs"][0]
        if len(started["specs"]) != 1 or "reproduce" not in recorded:
            raise UsageError(f"--resume: {args.resume} holds no reproduction")
        names, scale = recorded["reproduce"], recorded.get("scale")
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise UsageError(f"--resume: {args.resume} records its experiments out of shape")
        if scale not in SCALES:
            raise UsageError(f"--resume: {args.resume} records an unknown scale {scale!r}")
        args.scale = args.scale or scale
        args.only = args.only or ",".join(names)
    scale, names = args.scale or "small", _names(args)
    return provenance.manifest([{"reproduce": list(names), "scale": scale}], _specs(names, scale))


def _specs(names, scale: str) -> list:
    from gdrelu.reproduce import experiment_specs

    return [spec for name in names for spec in experiment_specs(name, scale)]


def execute(args, started: dict | None = None) -> int:
    """Check the request, open the directory, run what is not finished, write the report."""
    from gdrelu import reproduce

    _names(args)  # a bad name is refused before JAX starts
    budget = options.budget_bytes(args.memory_budget)
    backends.enable_x64()
    backends.prepare(  # before the manifest
        every_core=True, cache_dir=args.cache_dir, kernel_flag=args.kernel
    )
    manifest = _manifest(args, started)
    if args.resume is not None:  # a request that differs is told so before its budget
        outdir.check_resumable(args.resume, manifest)
    names, scale = _names(args), args.scale or "small"
    # each spec, with its cells whose results stay together (a Section 10 group's)
    kept = [(spec, reproduce.kept_cells(n, scale)) for n in names for spec in _specs([n], scale)]
    specs, cells = [spec for spec, _ in kept], [count for _, count in kept]
    backends.check_specs_kernel(specs, args.kernel)  # every experiment's, before it starts
    # before the directory is written; one experiment at a time, with the whole budget
    lower = "" if scale == reproduce.SCALES[0] else "--scale (or --only)"  # "": the budget
    options.check_fits(specs, budget, together=False, lower=lower, cells=cells)
    # a resume's directory is checked against its manifest before the paper scale's
    # estimate times each path; a new one is made after it, so a Ctrl-C there leaves none
    resumed = args.resume is not None
    out = outdir.open_directory(args, manifest) if resumed else None
    if scale == "paper":
        hours = reproduce.estimated_seconds(scale, names) / 3600
        print(f"gdrelu: the paper's scale needs at most about {hours:.1f} h on "
              f"{backends.backend_name()} (from a short timing of each path here)",
              file=sys.stderr)  # fmt: skip
    if not resumed:
        out = outdir.open_directory(args, manifest)
    progress = _ProgressLine(args.quiet)
    try:
        path = reproduce.reproduce(
            out, scale=scale, only=names, on_progress=progress, memory_budget=budget
        )
    except KeyboardInterrupt:
        progress.end()
        raise Interrupted(backends.resume_command("reproduce", out, args)) from None
    progress.end()
    print(f"report: {path} and {path.with_suffix('.html')}")
    return 0


class _ProgressLine:
    """The reproduction's progress: one line redrawn in place on a terminal; where stderr
    is no terminal (a batch job's log), one line per `progress.LOG_SECONDS`, the first at
    once."""

    def __init__(self, quiet: bool) -> None:
        from gdrelu.cli.progress import LOG_SECONDS, is_terminal

        self.every = LOG_SECONDS
        self.quiet, self.start = quiet, time.perf_counter()
        self.terminal = is_terminal(sys.stderr)
        self.drawn = None  # when the last line was written

    def __call__(self, line: str) -> None:
        interrupt.raise_if_pending()
        now = time.perf_counter()
        due = self.terminal or self.drawn is None or now - self.drawn >= self.every
        if self.quiet or not due:
            return
        text = f"{now - self.start:7.0f} s  {line:<70}"
        print(f"\r{text}" if self.terminal else text.rstrip(), end="" if self.terminal else "\n",
              file=sys.stderr)  # fmt: skip
        self.drawn = now

    def end(self) -> None:
        """After the last line: end the terminal's line."""
        if self.terminal and self.drawn is not None and not self.quiet:
            print(file=sys.stderr)
