"""Baselines and peers rebuilt for the benchmarks; none of this is shipped."""
