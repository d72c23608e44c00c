"""Benchmarks and kernel reports for kamim_fast; see benchmarks/README.md."""
