"""Usage reports are exact: totals, calendar series and breakdowns equal what the test
computes itself from the raw events, in any IANA zone (DST, +05:30, +05:45, Lord Howe's
30-minute DST), for any range and filter, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.events import when
from support.helpers import event, gid, gql, ingest, make_account

from gql_usage.storage.db import StatementCounter, connection

pytestmark = pytest.mark.citus

KEYS = ["k1", "k2", "k3"]
USERS = [("admin", "ADMIN"), ("u2", "MEMBER")]
ENDPOINTS = ["/v2/person", "/v2/company", "prospecting/contact/enrich", "/v2/free"]
SOURCES = ["api", "chrome_extension", "salesforce"]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu",
         "Australia/Lord_Howe", "Pacific/Chatham", "America/St_Johns", "Asia/Tokyo"]
DST_DAYS = [datetime(2026, 3, 8, 7, tzinfo=UTC), datetime(2026, 3, 29, 1, tzinfo=UTC),
            datetime(2026, 4, 4, 15, tzinfo=UTC), datetime(2026, 10, 25, 1, tzinfo=UTC),
            datetime(2026, 11, 1, 6, tzinfo=UTC)]
SPAN_START = datetime(2026, 2, 20, tzinfo=UTC)
SPAN_END = datetime(2026, 11, 20, tzinfo=UTC)

QUERY = """query($f: UsageFilter!, $g: Granularity!, $by: UsageDimension!) {
  account { usage(filter: $f) {
    calls credits
    series(granularity: $g) { start end calls credits }
    breakdown(by: $by) { key label calls credits shareOfCredits }
  } } }"""


def make_events(seed: int = 11, n: int = 700) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 3 == 0:  # cluster around DST changes and bucket edges
            t = rng.choice(DST_DAYS) + timedelta(seconds=rng.randrange(-3 * 3600, 3 * 3600))
        else:
            span = int((SPAN_END - SPAN_START).total_seconds())
            t = SPAN_START + timedelta(seconds=rng.randrange(span))
        t += timedelta(microseconds=rng.randrange(1_000_000))
        out.append(event(f"r{i}", "acme", rng.choice(KEYS), rng.choice(USERS)[0],
                         rng.choice(ENDPOINTS), rng.choice(SOURCES),
                         0 if i % 10 == 0 else rng.randrange(1, 50), t))
    return out


EVENTS = make_events()



def matching(events, start, end, keys=None, endpoints=None, sources=None, users=None):
    return [e for e in events if start <= when(e) < end
            and (keys is None or e["apiKeyId"] in keys)
            and (endpoints is None or e["endpoint"] in endpoints)
            and (sources is None or e["source"] in sources)
            and (users is None or e["userId"] in users)]


def bucket_identity(t: datetime, tz: ZoneInfo, granularity: str) -> object:
    local = t.astimezone(tz)
    if granularity == "HOUR":
        return (local.replace(minute=0, second=0, microsecond=0, tzinfo=None),
                local.utcoffset())
    d = local.date()
    if granularity == "DAY":
        return d
    if granularity == "WEEK":
        return d - timedelta(days=d.weekday())
    return (d.year, d.month)


def expected_boundaries(start: datetime, end: datetime, tz: ZoneInfo,
                        granularity: str) -> list[tuple[datetime, datetime]]:
    """Buckets found by walking the range in quarter hours (every zone boundary in use
    today falls on one) and cutting wherever the local calendar unit changes."""
    cuts = [start]
    t = start
    current = bucket_identity(start, tz, granularity)
    step = timedelta(minutes=15)
    t = datetime.fromtimestamp((int(start.timestamp()) // 900 + 1) * 900, UTC)
    while t < end:
        ident = bucket_identity(t, tz, granularity)
        if ident != current:
            cuts.append(t)
            current = ident
        t += step
    cuts.append(end)
    return list(zip(cuts, cuts[1:], strict=False))


def check_report(usage: dict, events: list[dict], start: datetime, end: datetime,
                 tz_name: str, granularity: str, by: str) -> None:
    tz = ZoneInfo(tz_name)
    assert usage["calls"] == len(events)
    assert usage["credits"] == sum(e["credits"] for e in events)
    got = [(datetime.fromisoformat(b["start"]), datetime.fromisoformat(b["end"]),
            b["calls"], b["credits"]) for b in usage["series"]]
    want = []
    for lo, hi in expected_boundaries(start, end, tz, granularity):
        inside = [e for e in events if lo <= when(e) < hi]
        want.append((lo, hi, len(inside), sum(e["credits"] for e in inside)))
    assert got == want
    for b in usage["series"]:  # buckets are shown in the filter's zone
        assert datetime.fromisoformat(b["start"]).utcoffset() == \
            datetime.fromisoformat(b["start"]).astimezone(tz).utcoffset()
    field = {"ENDPOINT": "endpoint", "API_KEY": "apiKeyId", "SOURCE": "source",
             "USER": "userId"}[by]
    groups: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for e in events:
        groups[e[field]][0] += 1
        groups[e[field]][1] += e["credits"]
    total = sum(e["credits"] for e in events)

    def row_key(value: str) -> str:
        return gid("ApiKey", value) if by == "API_KEY" else (
            gid("User", value) if by == "USER" else value)

    expected_rows = sorted(((row_key(k), c, cr) for k, (c, cr) in groups.items()),
                           key=lambda r: (-r[2], -r[1], r[0]))
    assert [(r["key"], r["calls"], r["credits"]) for r in usage["breakdown"]] == expected_rows
    for r in usage["breakdown"]:
        assert r["shareOfCredits"] == pytest.approx(100 * r["credits"] / total if total else 0)
    if total:
        assert sum(r["shareOfCredits"] for r in usage["breakdown"]) == pytest.approx(100)


async def seed(client) -> None:
    await make_account(client, "acme", users=USERS, keys=KEYS, time_zone="Europe/Berlin")
    for i in range(0, len(EVENTS), 350):
        result = await ingest(client, EVENTS[i:i + 350])
        assert result["accepted"] == len(EVENTS[i:i + 350])


async def report(client, start, end, tz, granularity, by, **filters):
    f = {"from": start.isoformat(), "to": end.isoformat(), "timeZone": tz, **filters}
    body = await gql(client, QUERY, {"f": f, "g": granularity, "by": by})
    assert "errors" not in body, body
    return body["data"]["account"]["usage"]


@pytest.mark.parametrize("tz", ZONES)
async def test_daily_and_hourly_series_across_dst_and_odd_offsets(client, tz):
    await seed(client)
    # A range cut mid-slot at both ends, spanning the spring DST changes.
    start = datetime(2026, 3, 27, 22, 7, 13, 250000, tzinfo=UTC)
    end = datetime(2026, 4, 6, 3, 52, 1, tzinfo=UTC)
    events = matching(EVENTS, start, end)
    usage = await report(client, start, end, tz, "DAY", "ENDPOINT")
    check_report(usage, events, start, end, tz, "DAY", "ENDPOINT")
    start_h, end_h = datetime(2026, 3, 28, 20, 31, tzinfo=UTC), datetime(2026, 4, 5, 2, tzinfo=UTC)
    usage = await report(client, start_h, end_h, tz, "HOUR", "SOURCE")
    check_report(usage, matching(EVENTS, start_h, end_h), start_h, end_h, tz, "HOUR", "SOURCE")


async def test_weekly_and_monthly_series_over_the_year(client):
    await seed(client)
    for tz in ("America/New_York", "Asia/Kathmandu"):
        for granularity in ("WEEK", "MONTH"):
            usage = await report(client, SPAN_START, SPAN_END, tz, granularity, "API_KEY")
            check_report(usage, EVENTS, SPAN_START, SPAN_END, tz, granularity, "API_KEY")


async def test_empty_range_is_zeros_and_empty_lists(client):
    await seed(client)
    start, end = datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 1, 3, tzinfo=UTC)
    usage = await report(client, start, end, "UTC", "DAY", "USER")
    assert usage["calls"] == usage["credits"] == 0 and usage["breakdown"] == []
    assert [(b["calls"], b["credits"]) for b in usage["series"]] == [(0, 0), (0, 0)]


async def test_filters_combine_with_and_across_and_or_within(client):
    await seed(client)
    f = {"apiKeyIds": [gid("ApiKey", "k1"), gid("ApiKey", "k3")],
         "endpoints": ["/v2/person", "/v2/free"], "sources": ["api"],
         "userIds": [gid("User", "admin")]}
    usage = await report(client, SPAN_START, SPAN_END, "UTC", "MONTH", "API_KEY", **f)
    events = matching(EVENTS, SPAN_START, SPAN_END, keys={"k1", "k3"},
                      endpoints={"/v2/person", "/v2/free"}, sources={"api"}, users={"admin"})
    assert events, "the filter must select something for the test to mean anything"
    check_report(usage, events, SPAN_START, SPAN_END, "UTC", "MONTH", "API_KEY")
    empty = await report(client, SPAN_START, SPAN_END, "UTC", "MONTH", "API_KEY",
                         apiKeyIds=[])
    assert empty["calls"] == 0


async def test_breakdown_limit_keeps_the_top_rows_with_whole_report_shares(client):
    await seed(client)
    body = await gql(client, """query($f: UsageFilter!) { account { usage(filter: $f) {
        credits breakdown(by: ENDPOINT, limit: 2) { key credits shareOfCredits } } } }""",
                     {"f": {"from": SPAN_START.isoformat(), "to": SPAN_END.isoformat()}})
    usage = body["data"]["account"]["usage"]
    rows = usage["breakdown"]
    assert len(rows) == 2
    by_endpoint: dict[str, int] = defaultdict(int)
    for e in EVENTS:
        by_endpoint[e["endpoint"]] += e["credits"]
    top = sorted(by_endpoint.items(), key=lambda kv: (-kv[1], kv[0]))[:2]
    assert [(r["key"], r["credits"]) for r in rows] == top
    assert rows[0]["shareOfCredits"] == pytest.approx(100 * top[0][1] / usage["credits"])


async def test_a_long_breakdown_reads_week_rows_and_equals_sql_over_the_raw_events(client):
    """273 days by key and by endpoint, nothing cutting them: the statement reads whole
    7-day cube units (grain 604800) in the middle, and every row equals what the test's
    own SQL over ``usage_event`` gives."""
    await seed(client)
    start, end = SPAN_START + timedelta(hours=5, minutes=7), SPAN_END - timedelta(hours=3)
    with StatementCounter() as counter:
        body = await gql(client, """query($f: UsageFilter!) { account { usage(filter: $f) {
            calls credits byKey: breakdown(by: API_KEY) { key calls credits }
            byEndpoint: breakdown(by: ENDPOINT) { key calls credits } } } }""",
                         {"f": {"from": start.isoformat(), "to": end.isoformat()}})
    assert "errors" not in body, body
    [statement] = [s for s in counter.statements if "usage_cube" in s]
    assert statement.count("grain = 604800") == 3  # totals, by key, by endpoint
    lo, hi = (int(t.timestamp() * 1_000_000) for t in (start, end))
    by: dict[str, list[tuple[str, int, int]]] = {}
    for name, label in (("byKey", "k.external_id"), ("byEndpoint", "p.path")):
        _, found = await connection().execute_query(
            f"SELECT {label}, COUNT(*), SUM(e.credits) FROM usage_event e"
            " JOIN api_key k ON k.account_id = e.account_id AND k.id = e.api_key_id"
            " JOIN endpoint p ON p.id = e.endpoint_id"
            f" WHERE e.occurred_at_us >= {lo} AND e.occurred_at_us < {hi} GROUP BY {label}")
        by[name] = sorted(((gid("ApiKey", r[0]) if name == "byKey" else r[0]), int(r[1]),
                           int(r[2])) for r in found)
    usage = body["data"]["account"]["usage"]
    for name in by:
        assert sorted((r["key"], r["calls"], r["credits"]) for r in usage[name]) == by[name]
    assert usage["calls"] == sum(c for _, c, _ in by["byKey"]) == len(
        matching(EVENTS, start, end))
    assert usage["credits"] == sum(cr for _, _, cr in by["byKey"])


ranges = st.tuples(
    st.integers(0, int((SPAN_END - SPAN_START).total_seconds())),
    st.integers(1, 40 * 86400), st.integers(0, 999_999))


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_any_range_zone_granularity_and_filter(client, data):
    """Property: for random ranges, zones, granularities and filters the report equals
    the test's own computation from the raw events."""
    if not getattr(client, "_seeded", False):
        await seed(client)
        client._seeded = True
    offset, length, micros = data.draw(ranges)
    start = SPAN_START + timedelta(seconds=offset, microseconds=micros)
    granularity = data.draw(st.sampled_from(["HOUR", "DAY", "WEEK", "MONTH"]))
    if granularity == "HOUR":
        length = min(length, 6 * 86400)
    end = start + timedelta(seconds=length)
    tz = data.draw(st.sampled_from(ZONES))
    by = data.draw(st.sampled_from(["ENDPOINT", "API_KEY", "SOURCE", "USER"]))
    keys = data.draw(st.none() | st.sets(st.sampled_from(KEYS), min_size=1))
    endpoints = data.draw(st.none() | st.sets(st.sampled_from(ENDPOINTS), min_size=1))
    filters = {}
    if keys is not None:
        filters["apiKeyIds"] = [gid("ApiKey", k) for k in sorted(keys)]
    if endpoints is not None:
        filters["endpoints"] = sorted(endpoints)
    usage = await report(client, start, end, tz, granularity, by, **filters)
    events = matching(EVENTS, start, end, keys=keys, endpoints=endpoints)
    check_report(usage, events, start, end, tz, granularity, by)


def test_expected_boundaries_helper_knows_a_23_hour_day():
    tz = ZoneInfo("Europe/Berlin")
    start = datetime(2026, 3, 28, 23, tzinfo=UTC)
    cuts = expected_boundaries(start, start + timedelta(days=2), tz, "DAY")
    assert cuts[0][1] - cuts[0][0] == timedelta(hours=23)
    assert cuts[0][0].astimezone(tz).date() == date(2026, 3, 29)
