#!/usr/bin/env python3
"""Entry point of the speed benchmark in bench/speedtest/ (options: --help)."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

from speedtest.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
