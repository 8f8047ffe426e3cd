"""Benchmarks behind `make bench-*`. Figures are ratios against peers measured in the same run."""
