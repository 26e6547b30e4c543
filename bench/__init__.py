"""Benchmarks (not tests): each `bench_*.py` module has a `main()` that prints its figures.

Figures are ratios against a baseline measured in the same run, never absolute targets.
Run them all with `python -m bench`, or one with `python -m bench reader`.
"""
