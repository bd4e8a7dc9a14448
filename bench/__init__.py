"""Benchmarks: `make bench` prints tables."""
