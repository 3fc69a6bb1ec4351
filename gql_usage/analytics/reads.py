"""Which cube units and raw-event pieces answer a spec: pure arithmetic, no database.

A spec reads whole cube units (7-day units, UTC days, hours, 15-minute slots) that no
bucket or offset boundary cuts, from the smallest grouping set holding its filters and
dimension, and the raw events for the rest; the parts never overlap and together cover
exactly ``[from, to)``. See README, 'Architecture' (Exactness), and
``gql_usage.storage.models``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from gql_usage.analytics.layout import SeriesLayout
from gql_usage.analytics.specs import GroupSpec, Spec, SpikeDriversSpec, TopSpec, UsageQuery
from gql_usage.calendar import US
from gql_usage.storage.models import CUBE_SETS, DIM_BITS

#: Past this many separate raw pieces a spec reads its whole range from the raw events.
MAX_RAW_PIECES = 64


@dataclass
class Reads:
    """What one spec reads: cube units per grain, and raw-event pieces."""

    #: grain -> merged ``[lo_s, hi_s)`` ranges of whole cube units of that grain
    units: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    raw_pieces: list[tuple[int, int]] = field(default_factory=list)  # [lo_us, hi_us)


def merge(pieces: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted ``[lo, hi)`` pieces with adjacent ones joined and empty ones dropped."""
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(pieces):
        if lo >= hi:
            continue
        if merged and merged[-1][1] == lo:
            merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return merged


def split(query: UsageQuery, cut_points_us: Sequence[int] = (),
          grains: Sequence[int] = tuple(CUBE_SETS)) -> Reads:
    """Cover the range with cube units of ``grains`` (coarsest first) and raw pieces.

    A unit is used only if no cut point (a bucket or offset boundary) lies strictly inside
    it, so each unit falls wholly into one bucket; between two cut points the coarsest
    units that fit are taken, then finer ones, then the raw events for what is left
    (``_cover``).
    """
    start, end = query.start_us, query.end_us
    cuts = sorted({c for c in cut_points_us if start < c < end})
    grains = tuple(grains)
    units: dict[int, list[tuple[int, int]]] = {g: [] for g in grains}
    raw: list[tuple[int, int]] = []
    bounds = [start, *cuts, end]
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        piece_units, piece_raw = _cover(lo, hi, grains)
        for grain, first, last in piece_units:
            units[grain].append((first, last))
        raw += piece_raw
    raw = merge(raw)
    if len(raw) > MAX_RAW_PIECES:
        return Reads({}, [(start, end)])
    return Reads({g: merge(r) for g, r in units.items() if r}, raw)


#: Intervals between cut points remembered by ``_cover``: a series' inner buckets are
#: the same from one request to the next (the same midnights), only its two edges move.
#: An entry is a few hundred bytes: a few MB at most.
COVER_CACHE_SIZE = 16_384


@functools.lru_cache(maxsize=COVER_CACHE_SIZE)
def _cover(lo: int, hi: int, grains: tuple[int, ...]
           ) -> tuple[tuple[tuple[int, int, int], ...], tuple[tuple[int, int], ...]]:
    """One interval between cut points (microseconds): the ``(grain, first_s, last_s)``
    runs of whole units, coarsest first, and the raw ``[lo_us, hi_us)`` pieces left."""
    units: list[tuple[int, int, int]] = []
    raw: list[tuple[int, int]] = []

    def cover(lo: int, hi: int, level: int) -> None:
        if lo >= hi:
            return
        if level == len(grains):
            raw.append((lo, hi))
            return
        grain_us = grains[level] * US
        first, last = -(-lo // grain_us) * grain_us, hi // grain_us * grain_us
        if first >= last:
            cover(lo, hi, level + 1)
            return
        units.append((grains[level], first // US, last // US))
        cover(lo, first, level + 1)
        cover(last, hi, level + 1)

    cover(lo, hi, 0)
    return tuple(units), tuple(raw)


def _needed_dims(query: UsageQuery, spec: Spec) -> int:
    needed = sum(DIM_BITS[column] for column, _ in query.filters())
    if isinstance(spec, GroupSpec | TopSpec | SpikeDriversSpec):
        needed |= DIM_BITS[spec.dimension.column]
    return needed


def choose_sets(query: UsageQuery, spec: Spec) -> dict[int, int]:
    """Per grain (coarsest first), the smallest grouping set holding the spec's filters
    and dimension; grains with no such set are left out."""
    needed = _needed_dims(query, spec)
    chosen = {}
    for grain, sets in CUBE_SETS.items():
        fits = [s for s in sets if s & needed == needed]
        if fits:
            chosen[grain] = min(fits, key=lambda s: (s.bit_count(), s))
    return chosen


def spec_reads(query: UsageQuery, spec: Spec,
               layout: SeriesLayout | None = None) -> tuple[Reads, dict[int, int]]:
    """What ``spec`` reads (a series' ``layout`` cuts its units at bucket and offset
    boundaries), and the grouping set it reads per grain."""
    sets = choose_sets(query, spec)
    cuts = layout.cut_points() if layout is not None else []
    return split(query, cuts, tuple(sets)), sets


def buckets_reads(query: UsageQuery, spec: Spec,
                  buckets: Sequence[tuple[int, int]]) -> tuple[Reads, dict[int, int]]:
    """What ``spec`` reads to cover exactly the disjoint ``[start_us, end_us)``
    ``buckets`` of ``query``'s filter (each bucket split on its own, so no unit straddles
    a bucket's edge), and the grouping set per grain."""
    sets = choose_sets(query, spec)
    units: dict[int, list[tuple[int, int]]] = {}
    raw: list[tuple[int, int]] = []
    for lo, hi in buckets:
        part = split(replace(query, start_us=lo, end_us=hi), (), tuple(sets))
        for grain, ranges in part.units.items():
            units.setdefault(grain, []).extend(ranges)
        raw.extend(part.raw_pieces)
    return Reads({g: merge(r) for g, r in units.items()}, merge(raw)), sets
