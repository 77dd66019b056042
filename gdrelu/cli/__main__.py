"""`python -m gdrelu.cli`: the `gdrelu` command."""

import sys

from gdrelu.cli import main

sys.exit(main())
