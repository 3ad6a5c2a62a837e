"""Latency and throughput harnesses and the results files they write (``benchmarks/results/``)."""
