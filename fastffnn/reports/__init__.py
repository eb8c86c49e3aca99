"""Reports: what a set of runs measured, as text (``scaling``: the benchmarks' table)."""
