"""Benchmarks: load generators and the benchmark report (`xiaozhi bench`)."""
