"""The retry schedule of webhook deliveries (``gql_usage.alerts.backoff``): exponential,
capped, with jitter in [d/2, d]."""

from __future__ import annotations

import random

import pytest

from gql_usage.alerts.backoff import retry_delay


class Fixed(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(("failures", "ceiling"), [
    (1, 10), (2, 20), (3, 40), (4, 80), (9, 2560), (10, 3600), (11, 3600), (500, 3600)])
def test_the_ceiling_doubles_per_failure_up_to_the_cap(failures: int, ceiling: float) -> None:
    assert retry_delay(failures, 10, 3600, Fixed(0.0)) == ceiling / 2  # least jitter
    assert retry_delay(failures, 10, 3600, Fixed(1.0)) == ceiling      # most jitter
    assert retry_delay(failures, 10, 3600, Fixed(0.5)) == ceiling * 0.75


def test_jitter_spreads_within_the_bounds() -> None:
    rng = random.Random(7)
    delays = [retry_delay(3, 10, 3600, rng) for _ in range(2000)]
    assert all(20 <= d <= 40 for d in delays)
    assert max(delays) - min(delays) > 15  # spread over most of the range
    assert len(set(delays)) > 1900         # not a handful of fixed values


def test_no_wait_exceeds_the_cap_even_for_huge_failure_counts() -> None:
    rng = random.Random(1)
    assert all(retry_delay(n, 0.5, 60, rng) <= 60 for n in range(1, 10_000, 37))


def test_zero_failures_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="failures"):
        retry_delay(0, 10, 3600)
