"""Benchmarks.

* ``python -m bench``: ingestion and dashboard latency side by side with baselines
  (PostgreSQL ``COPY``, a hand-written ``GROUP BY``, the analytics SQL alone).
* ``python -m bench.growth``: the same at several sizes, as one table.
* ``python -m bench.load``: a bounded mixed load test with exactness and isolation checks.
* ``python -m bench.filter_input``: what building ``UsageFilter`` arguments costs per
  dashboard request, with and without ``gql_usage.graphql.inputs.plain_input``.
"""
