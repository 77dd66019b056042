"""`python -m gdrelu.cli`: the `gdrelu` command."""

from gdrelu.cli import command

command()
