"""Benchmarks of the POS → AIQ sync: scripts that print a table, not tests (``python -m bench.run``)."""
