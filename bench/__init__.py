"""Benchmarks (`make bench`): each section measures ours against a reference tool in the same run."""
