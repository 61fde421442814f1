"""``python -m nasseg.runner search|results ...`` (the same commands as ``nasseg search|results``)."""

import sys

from .cli import main

sys.exit(main())
