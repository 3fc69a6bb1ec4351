"""Benchmarks.

* ``python -m bench``: ingestion and dashboard latency side by side with baselines
  (PostgreSQL ``COPY``, a hand-written ``GROUP BY``, the analytics SQL alone).
* ``python -m bench.growth``: the same at several sizes, as one table.
* ``python -m bench.load``: a bounded mixed load test with exactness and isolation checks.
"""
