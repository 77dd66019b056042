"""Ctrl-C that is not lost. Python drops a KeyboardInterrupt raised inside a garbage
collector or weakref callback (JAX runs some), printing "Exception ignored in ...", and
the run went on to its end; the handler also records the interrupt, the command raises
it again at its next check, and such a dropped interrupt prints nothing. SIGTERM (what
a batch scheduler sends at its time limit) stops the command the same way, with exit
code 143 rather than 130."""

from __future__ import annotations

import signal
import sys
import threading

_pending = threading.Event()
_terminated = threading.Event()  # the interrupt was SIGTERM's
SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_CODES = tuple(128 + signum for signum in SIGNALS)  # an interrupted command's: 130, 143


def _on_signal(signum, frame) -> None:
    if signum == signal.SIGTERM:
        _terminated.set()
    _pending.set()
    raise KeyboardInterrupt


def exit_code() -> int:
    """The exit code of an interrupted command: 128 + the signal's number."""
    return 128 + (signal.SIGTERM if _terminated.is_set() else signal.SIGINT)


def word() -> str:
    """What the command says it was: "interrupted" (Ctrl-C), or "terminated" (SIGTERM)."""
    return "terminated" if _terminated.is_set() else "interrupted"


def _quiet_when_interrupted(report):
    """`sys.unraisablehook` while the handler is installed: a dropped KeyboardInterrupt
    is pending (raised again later), not a traceback to print; the rest go to `report`."""

    def hook(unraisable) -> None:
        if not (_pending.is_set() and issubclass(unraisable.exc_type, KeyboardInterrupt)):
            report(unraisable)

    return hook


def install():
    """Handle SIGINT and SIGTERM here (from the main thread only; a signal the parent had
    ignored, as a shell does SIGINT for `gdrelu run &`, stays ignored); returns what to
    restore."""
    _pending.clear()
    _terminated.clear()
    if threading.current_thread() is not threading.main_thread():
        return None
    taken = [signum for signum in SIGNALS if signal.getsignal(signum) is not signal.SIG_IGN]
    if not taken:
        return None
    hook, sys.unraisablehook = sys.unraisablehook, _quiet_when_interrupted(sys.unraisablehook)
    return {signum: signal.signal(signum, _on_signal) for signum in taken}, hook


def restore(previous) -> None:
    if previous is not None:
        for signum, handler in previous[0].items():
            if handler is not None:  # None: a handler not set from Python, left as it is
                signal.signal(signum, handler)
        sys.unraisablehook = previous[1]
    _pending.clear()
    _terminated.clear()


def on_signal(handler) -> None:
    """SIGINT and SIGTERM (where not ignored) call `handler(signum, frame)` from now on: for
    the process's shutdown, once the command has ended (`gdrelu.cli.command`)."""
    if threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            if signal.getsignal(signum) is not signal.SIG_IGN:
                signal.signal(signum, handler)


def raise_if_pending() -> None:
    """Raise the KeyboardInterrupt of a Ctrl-C that a callback swallowed."""
    if _pending.is_set():
        raise KeyboardInterrupt
