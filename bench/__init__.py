"""Benchmarks: `make bench` (python -m bench) writes a report under bench/results/."""
