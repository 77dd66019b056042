"""How the command refuses a request: one line naming the setting, exit code 2."""

EXIT_USAGE = 2


class UsageError(Exception):
    """A bad request: reported on one line, exit code 2, before anything is written."""


class Interrupted(Exception):
    """Ctrl-C once the run directory holds its manifest: the command that finishes it."""


class PeerLost(Exception):
    """Another --distributed process ended while this one trained: one line, with the
    command that finishes the run where this process knows it (process 0); the process
    then exits with code 1 at once (`cli.leave_at_once`, docs/design.md)."""
