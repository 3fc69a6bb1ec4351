"""What analytics is asked (a ``UsageQuery`` and its ``Spec``s) and what it answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple
from zoneinfo import ZoneInfo

from gql_usage import calendar
from gql_usage.analytics.dimensions import Dimension
from gql_usage.calendar import Granularity


@dataclass(frozen=True)
class UsageQuery:
    """What to count: one account, ``[start_us, end_us)``, and filters (internal ids).

    ``None`` means "no filter on this dimension"; an empty tuple matches nothing.
    """

    account_id: int
    start_us: int
    end_us: int
    time_zone: str = "UTC"
    api_key_ids: tuple[int, ...] | None = None
    endpoint_ids: tuple[int, ...] | None = None
    source_ids: tuple[int, ...] | None = None
    user_ids: tuple[int, ...] | None = None

    @property
    def tz(self) -> ZoneInfo:
        return calendar.zone(self.time_zone)

    def filters(self) -> list[tuple[str, tuple[int, ...]]]:
        """(column, ids) of every dimension filtered on."""
        return [(dim.column, ids) for dim, ids in (
            (Dimension.API_KEY, self.api_key_ids), (Dimension.ENDPOINT, self.endpoint_ids),
            (Dimension.SOURCE, self.source_ids), (Dimension.USER, self.user_ids),
        ) if ids is not None]


@dataclass(frozen=True)
class Totals:
    calls: int = 0
    credits: int = 0


@dataclass(frozen=True)
class TotalsSpec:
    pass


@dataclass(frozen=True)
class SeriesSpec:
    granularity: Granularity


@dataclass(frozen=True)
class GroupSpec:
    dimension: Dimension


@dataclass(frozen=True)
class TopSpec:
    """The first ``limit`` groups of ``dimension`` in the API's order (credits, then calls,
    both descending, then the row's key), cut in SQL; see ``Top``."""

    dimension: Dimension
    limit: int


@dataclass(frozen=True)
class RangeSeriesSpec:
    """A series of the same filter over another range, ``[start_us, end_us)``: the
    look-back of ``spikes`` (``gql_usage.analytics.spikes``), read in the statement of
    the report's other fields. Its buckets are laid out over its own range."""

    granularity: Granularity
    start_us: int
    end_us: int


@dataclass(frozen=True)
class WindowSpec:
    """Totals of the query's filters over ``[start_us, end_us)``, a part of its range (a
    credit pool's burn-rate window, ``gql_usage.analytics.forecast``): answered in the
    same statement as the query's other specs."""

    start_us: int
    end_us: int


@dataclass(frozen=True)
class SpikeDriversSpec:
    """Per spike, the groups of ``dimension`` that drive it: of the groups with calls in
    the spike's bucket, the ``candidates`` with the most credits there, with their calls
    and credits in that bucket and in each bucket of its baseline window.

    ``buckets`` are ``[start_us, end_us)`` ranges, sorted and disjoint; ``spikes`` holds,
    per spike, the index of its bucket and the indexes of its window's buckets. Answered
    with ``DriverValues``; at most ``candidates x (1 + window)`` rows per spike leave the
    database."""

    dimension: Dimension
    buckets: tuple[tuple[int, int], ...]
    spikes: tuple[tuple[int, tuple[int, ...]], ...]
    candidates: int


Spec = (TotalsSpec | SeriesSpec | GroupSpec | TopSpec | RangeSeriesSpec | SpikeDriversSpec
        | WindowSpec)

_KINDS = (TotalsSpec, SeriesSpec, GroupSpec, TopSpec, RangeSeriesSpec, SpikeDriversSpec,
          WindowSpec)


def spec_order(spec: Spec) -> tuple[int, str]:
    """A fixed order of specs, so that one set of specs always makes the same statement
    whatever order the resolvers asked in (the benchmark's floor SQL relies on it)."""
    return _KINDS.index(type(spec)), repr(spec)


def query_order(query: UsageQuery) -> tuple[int, int, str]:
    """A fixed order of the queries answered in one statement (earliest range first)."""
    return query.start_us, query.end_us, repr(query)


@dataclass(frozen=True)
class Top:
    """Answer to a ``TopSpec``: its rows (id -> totals) and, over every group with calls
    (not only the rows), how many there are and their totals."""

    rows: dict[int, Totals]
    groups: int
    totals: Totals


class SeriesPoint(NamedTuple):
    """One bucket's numbers (a tuple: a series answers hundreds per request)."""

    start_us: int
    end_us: int
    calls: int
    credits: int


#: Answer to a ``SpikeDriversSpec``: per spike (in its order), per group id, per bucket
#: index, (calls, credits); buckets where the group had no calls are absent.
DriverValues = list[dict[int, dict[int, tuple[int, int]]]]
