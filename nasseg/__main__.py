"""``python -m nasseg ...``: the same as the ``nasseg`` command."""

import sys

from .shell.cli.main import main

sys.exit(main())
