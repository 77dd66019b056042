"""Ctrl-C that is not lost. Python drops a KeyboardInterrupt raised inside a garbage
collector or weakref callback (JAX runs some), printing "Exception ignored in ...", and
the run went on to its end; the handler also records the interrupt, the command raises
it again at its next check, and such a dropped interrupt prints nothing."""

from __future__ import annotations

import signal
import sys
import threading

_pending = threading.Event()


def _on_sigint(signum, frame) -> None:
    _pending.set()
    raise KeyboardInterrupt


def _quiet_when_interrupted(report):
    """`sys.unraisablehook` while the handler is installed: a dropped KeyboardInterrupt
    is pending (raised again later), not a traceback to print; the rest go to `report`."""

    def hook(unraisable) -> None:
        if not (_pending.is_set() and issubclass(unraisable.exc_type, KeyboardInterrupt)):
            report(unraisable)

    return hook


def install():
    """Handle SIGINT here (from the main thread only, and unless the parent had it
    ignored, as a shell does for `gdrelu run &`); returns what to restore."""
    _pending.clear()
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        return None
    hook, sys.unraisablehook = sys.unraisablehook, _quiet_when_interrupted(sys.unraisablehook)
    return signal.signal(signal.SIGINT, _on_sigint), hook


def restore(previous) -> None:
    if previous is not None:
        if previous[0] is not None:  # None: a handler not set from Python, left as it is
            signal.signal(signal.SIGINT, previous[0])
        sys.unraisablehook = previous[1]
    _pending.clear()


def raise_if_pending() -> None:
    """Raise the KeyboardInterrupt of a Ctrl-C that a callback swallowed."""
    if _pending.is_set():
        raise KeyboardInterrupt
