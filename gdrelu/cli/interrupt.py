"""Ctrl-C that is not lost. Python drops a KeyboardInterrupt raised inside a garbage
collector or weakref callback (JAX runs some), and the run went on to its end; the
handler also records the interrupt, and the progress callbacks raise it again."""

from __future__ import annotations

import signal
import threading

_pending = threading.Event()


def _on_sigint(signum, frame) -> None:
    _pending.set()
    raise KeyboardInterrupt


def install():
    """Handle SIGINT here (from the main thread only, and unless the parent had it
    ignored, as a shell does for `gdrelu run &`); returns the handler to restore."""
    _pending.clear()
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        return None
    return signal.signal(signal.SIGINT, _on_sigint)


def restore(previous) -> None:
    if previous is not None:
        signal.signal(signal.SIGINT, previous)
    _pending.clear()


def raise_if_pending() -> None:
    """Raise the KeyboardInterrupt of a Ctrl-C that a callback swallowed."""
    if _pending.is_set():
        raise KeyboardInterrupt
