"""The `gdrelu` command.

    gdrelu run                       # the embedded default experiment
    gdrelu run --widths 16,32 --runs 200 --out results/
    gdrelu run --config experiment.toml --seed 3
    gdrelu run --protocol sgd --widths 16,32
    gdrelu compare --optimizers gd,sgd,adam --widths 16,32 --runs 200 --max-checks 20
    gdrelu run --resume runs/20260101-120000   # finish an interrupted run
    gdrelu run --preset section10 --scale small  # the paper's Section 10 grid, laptop size
    gdrelu reproduce --scale small --out repro/  # every experiment of the paper, one report

Settings come from the defaults, then a protocol, then the TOML file, then the flags. A
bad setting is reported on one line naming it, with exit code 2, before anything is
written.

    parser     the flags, their accepted values from the package's constants
    options    the specs a command line asks for
    resume     --resume DIR: the manifest's specs, checked against the flags
    outdir     the run directory: disk space, creation, manifest
    backends   JAX's set-up: precision, CPU cores, compilation cache, kernel, processes
    progress   the progress bar and its ETA from checks
    interrupt  Ctrl-C (and SIGTERM) that a callback swallowed, raised again at the next check
    run        `gdrelu run` and `gdrelu compare`
    section10  the Section 10 preset
    reproduce  `gdrelu reproduce`
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import warnings
from typing import NoReturn

from gdrelu.cache import default_cache_dir
from gdrelu.cli import interrupt
from gdrelu.cli.errors import EXIT_USAGE, Interrupted, PeerLost, UsageError

__all__ = ["default_cache_dir", "main"]


def main(argv=None) -> int:
    """Parse, run, and report a refused request on one line (exit code 2): a bad setting,
    a width of which one run cannot fit in the memory budget, or a run directory that
    cannot be resumed (a stored unit unreadable or of other cells). Ctrl-C while the
    command starts (its imports take seconds) ends it on one line too."""
    previous_handler = interrupt.install()  # before JAX is imported (`gdrelu` imports lazily)
    os.environ["MPLBACKEND"] = "Agg"  # files only, never a window, with or without a display
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print(f"gdrelu: {interrupt.word()}", file=sys.stderr)
        return interrupt.exit_code()
    except PeerLost as e:  # _main has cleaned up: its directory released, its kernel reset
        print(f"gdrelu: error: {e}", file=sys.stderr)
        leave_at_once(1)
        return 1
    finally:
        interrupt.restore(previous_handler)


def command() -> NoReturn:
    """The `gdrelu` command: `main`, then exit with its code. An interrupted command
    leaves at once (`leave_at_once`): Python's shutdown while XLA still compiled in its
    threads ended a Ctrl-C in a segmentation fault (exit code 139) after the hint. A
    finished command leaves at once as well, its files written: Python's shutdown (0.8
    s of JAX's exit handlers) let a Ctrl-C or SIGTERM that came in it kill the process by
    the signal, so that a finished run read as killed. Only with --distributed does JAX's
    handler part from the other processes; a Ctrl-C in it leaves at once with the
    command's code."""
    ended = []  # the command's code, once `main` has returned
    # from `main`'s end (it restores this handler) to the process's: the code, at once
    interrupt.on_signal(lambda s, f: leave_at_once(ended[0] if ended else 128 + s))
    ended.append(main())
    if ended[0] in interrupt.EXIT_CODES or not _distributed():
        leave_at_once(ended[0])
    sys.exit(ended[0])


def _distributed() -> bool:
    """Whether this process joined others (jax.distributed), where JAX was loaded."""
    jax = sys.modules.get("jax")
    if jax is None:
        return False
    return getattr(jax.distributed, "is_initialized", lambda: True)()


def leave_at_once(code: int) -> None:
    """End the process with `code` now, its output flushed, without Python's exit
    handlers: once another --distributed process has died, JAX's handler waits for it
    and aborts in C++ (exit code 134 and a stack trace, up to about 90 s later)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a pipe whose reader left
            stream.flush()
    native = sys.modules.get("gdrelu.native")
    if native is not None:  # its exit handler would have removed the C loops' build
        native.remove_build_directory()
    os._exit(code)


def _main(argv) -> int:
    from gdrelu.cli import backends, outdir, reproduce, resume, run, section10
    from gdrelu.cli.parser import parser
    from gdrelu.memory import BudgetError
    from gdrelu.spec import SpecError
    from gdrelu.store import ResumeError

    interrupt.raise_if_pending()  # a Ctrl-C that a callback swallowed while JAX loaded
    formatwarning, warnings.formatwarning = warnings.formatwarning, _one_line
    args = None
    restore_kernel = None
    try:
        args = parser().parse_args(argv)
        if args.command is None:
            parser().print_help()
            return EXIT_USAGE
        started = resume.started(args)
        kernel, recorded = getattr(args, "kernel", None), resume.recorded_kernel(args, started)
        restore_kernel = backends.use_kernel(
            kernel or recorded, recorded_by=args.resume if kernel is None and recorded else None
        )
        resume.check_command(args, started)
        if args.command == "reproduce":
            return reproduce.execute(args, started)
        if getattr(args, "preset", None) == "section10" or resume.is_preset(started):
            return section10.execute(args, started)
        return run.execute(args, started)
    except (UsageError, SpecError) as e:
        print(f"gdrelu: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ResumeError as e:
        print(f"gdrelu: error: --resume: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BudgetError as e:
        print(f"gdrelu: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Interrupted as resume_with:
        print(f"gdrelu: {interrupt.word()}; finish with: {resume_with}", file=sys.stderr)
        return interrupt.exit_code()
    except KeyboardInterrupt:  # outside training (results being written): the held run's hint
        print(f"gdrelu: {interrupt.word()}{_resume_hint(args)}", file=sys.stderr)
        return interrupt.exit_code()
    except BrokenPipeError:
        return _output_closed()
    except OSError as e:
        if e.errno not in _STORAGE_ERRORS:
            raise
        where = f": {e.filename}" if e.filename else ""
        print(f"gdrelu: error: {e.strerror}{where}{_resume_hint(args)}", file=sys.stderr)
        return 1
    finally:
        if restore_kernel is not None:
            restore_kernel()
        outdir.release()
        warnings.formatwarning = formatwarning


def _output_closed() -> int:
    """stdout or stderr went to a pipe whose reader left (`gdrelu run | head`): say so on
    stderr if it is still open, with the run directory (stdout is written to only once
    every result is; a closed stderr ends a run while it trains, which `--resume`
    finishes), and point the closed streams at /dev/null: Python's flush at exit would
    fail again."""
    from gdrelu.cli import outdir

    nowhere = os.open(os.devnull, os.O_WRONLY)
    os.dup2(nowhere, sys.stdout.fileno())  # the command has nothing more to print there
    held = outdir.held()
    where = f"; the run directory: {held}/" if held is not None else ""
    try:
        print(f"gdrelu: error: the output's reader left{where}", file=sys.stderr, flush=True)
    except OSError:
        os.dup2(nowhere, sys.stderr.fileno())
    os.close(nowhere)
    return 1


def _one_line(message, category, filename, lineno, line=None) -> str:
    """A warning as the command prints it: one line, without Python's source location."""
    return f"gdrelu: warning: {message}\n"


_STORAGE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO,
                   errno.ENOTDIR, errno.EISDIR, errno.EEXIST}  # fmt: skip
# the last three: a file where the run directory keeps a folder (units/), or the reverse


def _resume_hint(args) -> str:
    """How to finish the run this process held, if it held one."""
    from gdrelu.cli import backends, outdir
    from gdrelu.store import MANIFEST

    started = outdir.held()
    if started is None or not (started / MANIFEST).exists():  # nothing to resume yet
        return ""
    command = "reproduce" if getattr(args, "command", None) == "reproduce" else "run"
    return f"; finish with: {backends.resume_command(command, started, args)}"
