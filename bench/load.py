#!/usr/bin/env python3
"""Entry point of the load-and-fault harness in bench/loadtest/ (options: --help)."""

import sys

from loadtest.cli import main

if __name__ == "__main__":
    sys.exit(main())
