"""`python -m bench.loadtest ...` from the repository root: the same as `bench/load.py`."""

import sys

from .cli import main

sys.exit(main())
