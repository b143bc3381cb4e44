"""Benchmarks behind ``coordwatch bench``: each figure is measured beside a baseline in the
same run, because the machines are shared and noisy."""
