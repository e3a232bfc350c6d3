"""Load-and-fault harness in parts; bench/load.py is its entry point."""
