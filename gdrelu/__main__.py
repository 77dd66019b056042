"""`python -m gdrelu`: the `gdrelu` command (as `python -m gdrelu.cli`)."""

from gdrelu.cli import command

command()
