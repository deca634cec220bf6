"""Benchmarks: wiregate beside the real peer it replaces, in the same run; ratios are ours/theirs."""
