"""Refusals are cheap, whole and charged; caches are bounded by bytes (issue 10, points 3
and 6b).

* A range far too long for its granularity is refused by arithmetic before any zone scan
  (``calendar.min_buckets``), everywhere buckets are laid out.
* The query cost stops as soon as it passes the maximum and counts a series' buckets
  exactly only when the bound leaves it a chance to fit.
* An argument error known before execution refuses the whole operation (``data: null``)
  with one ``BAD_USER_INPUT`` naming the argument's path, and no analytics SQL runs.
* A refused operation is charged ``REFUSAL_POINTS``; once the budget cannot pay it, the
  client is throttled (``RATE_LIMITED``).
* Parse, validation and cost caches key on digests and stay within their byte budgets
  whatever padded texts arrive, while the same document still hits.

"Cheap" is measured with a deadline: SIGALRM interrupts the event loop (the old code spent
its time in pure-Python loops) so a slow refusal fails in seconds instead of minutes.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import signal
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_limits import Clock, codes, post, serve, statements

from gql_usage import caches, calendar
from gql_usage.analytics import query as analytics_query
from gql_usage.analytics.layout import bucket_layout
from gql_usage.analytics.specs import SeriesSpec, UsageQuery
from gql_usage.calendar import Granularity
from gql_usage.graphql import schema
from gql_usage.graphql.limits import assessments, cost
from gql_usage.graphql.limits.rate_limit import REFUSAL_POINTS

#: The old code took 9-59 s for each of these; a refusal must take well under a second.
DEADLINE_S = 5.0
TRIVIAL = "{ viewer { id } }"
YEAR = {"from": "2025-01-15T12:00:00Z", "to": "2026-01-15T12:00:00Z"}


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fails with ``TimeoutError`` once ``seconds`` have passed, even inside a CPU loop."""
    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.perf_counter()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.perf_counter() - started < seconds


_runs = iter(range(1, 10_000))


def aliased_series(n: int, years: int, granularity: str) -> str:
    """``n`` aliased reports over ``years`` each, every range distinct (no cache helps),
    and distinct from every earlier call's."""
    run = next(_runs)
    parts = [f'u{i}: usage(filter: {{from: "1850-01-01T00:00:{i:02}Z", to: '
             f'"{1850 + years}-01-01T{run % 24:02}:{run // 24 % 60:02}:00Z", '
             f'timeZone: "Europe/Berlin"}}) {{ series(granularity: {granularity}) '
             "{ calls } }" for i in range(n)]
    return "{ account { " + " ".join(parts) + " } }"


# --- Refusals are cheap -----------------------------------------------------------------

async def test_30_aliased_153_year_month_series_are_refused_at_once(db_url):
    """Old: 19.6 s (SQLite) / 32.7 s (PostgreSQL), every bucket of every alias laid out."""
    async with serve(db_url) as client:
        baseline, _ = await statements(client, TRIVIAL)
        for _ in range(3):  # fresh ranges each time: nothing is cached
            with deadline(DEADLINE_S):
                count, response = await statements(client, aliased_series(30, 153, "MONTH"))
            body = response.json()
            assert body["data"] is None and codes(body) == ["QUERY_TOO_COSTLY"], body
            # Stopped in the third alias: account 1, two MONTH reports of 1,837 buckets
            # (Jan 1850 to Jan 2003) at usage 5 + 1 + series 5 + 1,837 each, then the
            # third report with its series' lower bound: its range is 55,882 days and
            # less than a day, minus 4 days of slack, over 31-day months.
            least = (55_882 - 4) // 31
            assert least == 1802
            assert body["errors"][0]["extensions"]["cost"] == \
                1 + 2 * (5 + 1 + 5 + 1837) + (5 + 1 + 5 + least)
            assert count == baseline


@pytest.mark.parametrize("zone", ["Europe/Berlin", "Australia/Lord_Howe", "Pacific/Apia"])
@pytest.mark.parametrize("granularity", ["HOUR", "DAY", "WEEK", "MONTH"])
async def test_year_1_to_9999_series_is_refused_before_any_scan(db_url, zone, granularity):
    """Old: 25-58 s of offset scanning before answering BAD_USER_INPUT (HOUR)."""
    async with serve(db_url) as client:
        baseline, _ = await statements(client, TRIVIAL)
        # The first and last days of the calendar have no datetime in UTC or in some
        # zones (an argument error of its own): the range starts a day in and ends a day short.
        query = ('{ account { usage(filter: {from: "0001-01-02T00:00:00", to: '
                 f'"9999-12-30T00:00:00", timeZone: "{zone}"}}) {{ calls '
                 f"series(granularity: {granularity}) {{ calls }} }} }} }}")
        with deadline(DEADLINE_S):
            count, response = await statements(client, query)
    body = response.json()
    assert body["data"] is None, body
    (error,) = body["errors"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "argument": "granularity"}
    assert error["path"] == ["account", "usage", "series"]
    assert error["message"].startswith("account.usage.series(granularity): the range "
                                       f"holds more than 2,000 {granularity} buckets")
    assert count == baseline


def test_every_layout_refuses_a_far_too_long_range_by_arithmetic():
    """``calendar.buckets``, ``analytics.layout.bucket_layout`` and the cost's
    ``bucket_count`` each refuse first; an exactly-2,000-hour range still lays out (cheaply)."""
    first = calendar.to_us(datetime(1, 1, 1, tzinfo=UTC))
    last = calendar.to_us(datetime(9999, 12, 31, tzinfo=UTC))
    tz = ZoneInfo("America/New_York")
    with deadline(1.0):
        for g in Granularity:
            with pytest.raises(calendar.TooManyBuckets):
                calendar.buckets(tz, first, last, g)
            with pytest.raises(calendar.TooManyBuckets):
                bucket_layout("America/New_York", first + 1, last, g)
            with pytest.raises(calendar.TooManyBuckets):
                cost.bucket_count(cost._Range("America/New_York", first + 2, last), g)
        start = calendar.to_us(datetime(2026, 1, 1, tzinfo=UTC))
        layout = bucket_layout("America/New_York", start,
                               start + 2000 * 3600 * calendar.US, Granularity.HOUR)
    assert len(layout.buckets) == 2000


EXTREME_ZONES = ["Pacific/Apia", "Pacific/Kwajalein", "Pacific/Kiritimati", "Asia/Manila",
                 "America/Sitka", "America/Juneau", "Australia/Lord_Howe", "Antarctica/Troll",
                 "Europe/Dublin", "Africa/Casablanca", "America/St_Johns", "UTC"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(zone=st.sampled_from(EXTREME_ZONES), granularity=st.sampled_from(list(Granularity)),
       start=st.datetimes(min_value=datetime(1800, 1, 1), max_value=datetime(2100, 1, 1)),
       length=st.integers(min_value=1, max_value=2100))
def test_min_buckets_never_exceeds_the_real_count(zone, granularity, start, length):
    """The bound that refuses without a scan is a true lower bound, in zones that skip or
    repeat whole days, change by half hours, or keep DST for weeks."""
    unit = {Granularity.HOUR: timedelta(hours=1), Granularity.DAY: timedelta(days=1),
            Granularity.WEEK: timedelta(days=7), Granularity.MONTH: timedelta(days=30)}
    start_us = calendar.to_us(start.replace(tzinfo=UTC))
    end_us = start_us + length * (unit[granularity] // timedelta(microseconds=1))
    bound = calendar.min_buckets(start_us, end_us, granularity)
    try:
        real = len(calendar.buckets(ZoneInfo(zone), start_us, end_us, granularity))
    except calendar.TooManyBuckets:
        return
    assert bound <= real


def test_min_buckets_around_skipped_and_repeated_days():
    """Samoa skipped 2011-12-30; Manila skipped 1844-12-31; Sitka repeated 1867-10-18."""
    for zone, day in [("Pacific/Apia", datetime(2011, 12, 30)),
                      ("Asia/Manila", datetime(1844, 12, 31)),
                      ("America/Sitka", datetime(1867, 10, 18))]:
        for before in range(0, 6):
            for after in range(1, 6):
                start = calendar.to_us((day - timedelta(days=before)).replace(tzinfo=UTC))
                end = calendar.to_us((day + timedelta(days=after)).replace(tzinfo=UTC))
                for g in Granularity:
                    real = len(calendar.buckets(ZoneInfo(zone), start, end, g))
                    assert calendar.min_buckets(start, end, g) <= real, (zone, g)


# --- Argument errors refuse the whole operation, before any SQL ------------------------

def dashboard(extra_series: str = "") -> str:
    query = importlib.import_module("bench.dashboard").DASHBOARD
    return query.replace("series(granularity: DAY) { start calls credits }",
                         "series(granularity: DAY) { start calls credits } " + extra_series)


async def test_dashboard_with_one_bad_series_is_refused_whole_before_any_sql(db_url):
    async with serve(db_url) as client:
        baseline, _ = await statements(client, TRIVIAL)
        good_count, good = await statements(client, {"query": dashboard(),
                                                     "variables": {"f": YEAR}})
        assert "errors" not in good.json() and good_count > baseline
        count, response = await statements(client, {
            "query": dashboard("hourly: series(granularity: HOUR) { start calls }"),
            "variables": {"f": YEAR}})
    body = response.json()
    assert response.status_code == 200
    assert body["data"] is None
    (error,) = body["errors"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "argument": "granularity"}
    assert error["path"] == ["account", "usage", "hourly"]
    assert error["message"] == ("account.usage.hourly(granularity): the range holds more "
                                "than 2,000 HOUR buckets; choose a coarser granularity or "
                                "a shorter range")
    line = next(n for n, text in enumerate(dashboard("hourly: series(granularity: HOUR)")
                                           .splitlines(), 1) if "HOUR" in text)
    column = dashboard("hourly: series(granularity: HOUR)").splitlines()[line - 1].index(
        "granularity: HOUR") + 1
    assert error["locations"] == [{"line": line, "column": column}]
    assert count == baseline  # authentication only: no analytics SQL


RANGE = 'from: "2026-01-01T00:00:00Z", to: "2026-01-08T00:00:00Z"'
BAD_ARGUMENTS = [
    # (document, variables, path, argument)
    ("{ account { name usage(filter: {" + RANGE + "}) { calls "
     "breakdown(by: ENDPOINT, limit: -1) { key } } } }", None,
     ["account", "usage", "breakdown"], "limit"),
    ("query($n: Int) { account { usage(filter: {" + RANGE + "}) { calls "
     "top: breakdown(by: USER, limit: $n) { key } } } }", {"n": -5},
     ["account", "usage", "top"], "limit"),
    ('{ account { usage(filter: {from: "2026-02-01T00:00:00Z", to: "2026-01-01T00:00:00Z"})'
     " { calls } } }", None, ["account", "usage"], "filter.from"),
    ("query($f: UsageFilter!) { account { r: usage(filter: $f) { calls } } }",
     {"f": {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z",
            "timeZone": "Mars/Olympus_Mons"}}, ["account", "r"], "filter.timeZone"),
    ('{ account { usage(filter: {from: "0001-01-01T00:00:00+05:00", '
     'to: "2026-01-01T00:00:00Z"}) { calls } } }', None, ["account", "usage"], "filter.from"),
    # Below a list: the path names the fields, without an index.
    ("{ account { apiKeys { id usage(filter: {" + RANGE + ', apiKeyIds: ["nope!"]}) '
     "{ calls } } } }", None, ["account", "apiKeys", "usage"], "filter.apiKeyIds[0]"),
    ("{ account { endpoints { path usage(filter: {" + RANGE + ', endpoints: ["/a", '
     '"/b\\u0000"]}) { calls } } } }', None, ["account", "endpoints", "usage"],
     "filter.endpoints[1]"),
    # Behind a fragment and an abstract type.
    ('{ node(id: "x") { ... on Account { ...R } } } fragment R on Account { usage(filter: {'
     + RANGE + "}) { s: series(granularity: HOUR) { calls } breakdown(by: SOURCE, "
     "limit: -2) { key } } }", None, ["node", "usage", "breakdown"], "limit"),
]


@pytest.mark.parametrize(("query", "variables", "path", "argument"), BAD_ARGUMENTS,
                         ids=["limit", "limit variable", "from >= to", "time zone",
                              "year 0", "key id under a list", "NUL under a list",
                              "fragment on an interface"])
async def test_known_argument_errors_refuse_the_operation_before_any_sql(
        db_url, query, variables, path, argument):
    async with serve(db_url) as client:
        baseline, _ = await statements(client, TRIVIAL)
        count, response = await statements(client, {"query": query,
                                                    "variables": variables or {}})
    body = response.json()
    assert body["data"] is None, body
    (error,) = body["errors"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "argument": argument}
    assert error["path"] == path
    assert error["message"].startswith(f"{'.'.join(path)}({argument}): ")
    assert count == baseline


async def test_a_skipped_bad_argument_is_not_an_error(db_url):
    async with serve(db_url) as client:
        body = (await post(client, "{ account { usage(filter: {" + RANGE + "}) { calls "
                           "breakdown(by: ENDPOINT, limit: -1) @skip(if: true) { key } } } }"
                           )).json()
    assert body == {"data": {"account": {"usage": {"calls": 20}}}}


# --- Refusals are charged ----------------------------------------------------------------

async def test_refusals_are_charged_and_throttled(db_url):
    """Each refusal costs ``REFUSAL_POINTS``; when the budget cannot pay it the client is
    throttled with RATE_LIMITED (429) and told why."""
    points = 3 * REFUSAL_POINTS + 50
    async with serve(db_url, clock=Clock(), rate_limit_points=points,
                     max_query_cost=1000) as client:
        bad = "{ account { usage(filter: {" + RANGE + "}) { breakdown(by: ENDPOINT, " \
              "limit: -1) { key } } } }"
        # account 1 + 11 x 100 = 1,101 points, over the maximum of 1,000.
        costly = "{ account { " + " ".join(f"e{i}: endpoints {{ path }}"
                                           for i in range(11)) + " } }"
        used = []
        for query, code in [(bad, "BAD_USER_INPUT"), (costly, "QUERY_TOO_COSTLY"),
                            (bad, "BAD_USER_INPUT")]:
            response = await post(client, query)
            assert response.status_code == 200
            assert codes(response.json()) == [code]
            assert response.headers["X-Query-Cost"] == str(REFUSAL_POINTS)
            used.append(int(response.headers["X-RateLimit-Used"]))
        assert used == [REFUSAL_POINTS, 2 * REFUSAL_POINTS, 3 * REFUSAL_POINTS]
        response = await post(client, bad)
        assert response.status_code == 429
        body = response.json()
        assert body["data"] is None and codes(body) == ["RATE_LIMITED"]
        assert "this operation is refused (account.usage.breakdown(limit): must be 0 or " \
               f"more), and a refused operation costs {REFUSAL_POINTS} points; 50 of " \
               f"{points} points per minute remain" in body["errors"][0]["message"]
        assert int(response.headers["Retry-After"]) >= 1
        # What is left still pays for cheap accepted operations.
        body = (await post(client, "{ rateLimit { used remaining } }")).json()
        assert body == {"data": {"rateLimit": {"used": 3 * REFUSAL_POINTS + 1,
                                               "remaining": 49}}}


# --- Caches: keyed by digests, bounded by bytes ------------------------------------------

BODY_PAD = 250_000  # the GraphQL body limit is 256 KiB


def padded(i: int) -> dict[str, Any]:
    """A distinct document near the body limit: padding in the text, or in an unused
    variable (padding the cost cache's variables key)."""
    if i % 2:
        return {"query": f"{{ v{i}: viewer {{ id }} }}" + " " * (BODY_PAD + i)}
    return {"query": f"query Q{i} {{ viewer {{ id }} }}",
            "variables": {"pad": "p" * (BODY_PAD + i)}}


async def test_padded_documents_cannot_pin_memory_and_repeats_still_hit(db_url):
    """200 distinct padded requests (~50 MB of text). The old caches (256 parsed documents
    by text, 1,024 costs by document and variables text) kept every one alive; now every
    cache stays within its byte budget and holds no client text as a key, and the padded
    texts still alive (found from the garbage collector, independently of the caches'
    accounting) fit in the parse cache's budget."""
    async with serve(db_url, rate_limit_points=10_000) as client:
        for i in range(200):
            body = (await post(client, padded(i))).json()
            assert "errors" not in body
            assert list(body["data"]) == [f"v{i}" if i % 2 else "viewer"]
        for cache in caches.CACHES:
            assert cache.bytes <= cache.budget, cache.name
            for key in cache._cache:
                assert not any(isinstance(part, str | bytes) and len(part) > 200
                               for part in _flatten(key)), cache.name
        assert schema._PARSED.bytes > 8 * caches.MIB  # it was used, up to its budget
        alive = _padded_texts_alive()
        assert 0 < len(alive) < 200
        assert sum(alive) <= schema._PARSED.budget, (len(alive), sum(alive))

        # The same padded document again and again: parsed, validated and costed once.
        same = padded(1001)
        parsed, validated = schema._PARSED.hits, schema._VALIDATED.hits
        costed = assessments._ASSESSMENTS.hits
        for _ in range(3):
            assert "errors" not in (await post(client, same)).json()
        assert schema._PARSED.hits == parsed + 2
        assert schema._VALIDATED.hits == validated + 2
        assert assessments._ASSESSMENTS.hits == costed + 2


def _padded_texts_alive() -> list[int]:
    """Sizes of the padded texts (``str`` or ``bytes`` of at least ``BODY_PAD``) that some
    live object still refers to."""
    gc.collect()
    seen: dict[int, int] = {}
    for obj in gc.get_objects():
        for ref in gc.get_referents(obj):
            if isinstance(ref, str | bytes) and len(ref) >= BODY_PAD and _padded(ref):
                seen[id(ref)] = sys.getsizeof(ref)
    return list(seen.values())


def _padded(text: str | bytes) -> bool:
    """Whether ``text`` holds ``padded``'s padding (a request's text or body); other big
    texts (the GraphiQL assets the server keeps in memory) are not the clients'."""
    if isinstance(text, bytes):
        return b" " * 1000 in text or b"p" * 1000 in text
    return " " * 1000 in text or "p" * 1000 in text


def _flatten(key: object) -> Iterator[object]:
    if isinstance(key, tuple):
        for part in key:
            yield from _flatten(part)
    else:
        yield key


def test_statement_and_layout_caches_are_bounded_by_bytes():
    """150 distinct 2,000-hour series (each layout ~400 KB, ~60 MB in all, several times
    the caches' budgets; the old 512-entry layout cache and 256-entry statement cache
    kept every one): both analytics caches stay within their byte budgets."""
    start = calendar.to_us(datetime(2026, 1, 1, tzinfo=UTC))
    hour = 3600 * calendar.US
    for i in range(150):
        query = UsageQuery(account_id=1, start_us=start + i * hour,
                           end_us=start + (i + 2000) * hour, time_zone="Europe/Berlin")
        prepared = analytics_query.prepare(query, [SeriesSpec(Granularity.HOUR)], "sqlite")
        assert len(prepared.layouts[0].buckets) == 2000
    for cache in (bucket_layout.cache,  # type: ignore[attr-defined]
                  analytics_query._prepare.cache):  # type: ignore[attr-defined]
        assert cache.bytes <= cache.budget, cache.name
        assert 0 < len(cache) < 150, cache.name


@pytest.fixture(autouse=True)
def _no_alarm() -> Iterator[None]:
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
