"""Benchmarks: each script runs Tandem's path and a reference side by side and prints a ratio table."""
