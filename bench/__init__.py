"""Benchmarks. ``python -m bench.quick`` measures ingestion and the dashboard query."""
