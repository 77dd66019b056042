"""`python -m gdrelu`: the `gdrelu` command (as `python -m gdrelu.cli`)."""

import sys

from gdrelu.cli import main

sys.exit(main())
