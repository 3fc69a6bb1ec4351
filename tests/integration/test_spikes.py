"""``UsageReport.spikes`` (SPEC 6.2) on SQLite and PostgreSQL: every spike, baseline,
excess, score and driver equals what the test computes itself from the events it
ingested (plain Python and ``statistics`` over local calendar buckets, README 'Spikes':
the same weekday in the 8 weeks before a day, the same hour on the 14 days before an
hour; a spike scores >= 3.5 with half of its window active)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from support.config import make_settings
from support.events import when
from support.helpers import add_keys, event, gid, gql, ingest, make_account

from gql_usage.analytics.dimensions import Dimension
from gql_usage.analytics.query import aggregate
from gql_usage.analytics.specs import SpikeDriversSpec, UsageQuery
from gql_usage.app import create_app
from gql_usage.storage.db import StatementCounter
from gql_usage.storage.models import Account, Endpoint

KEYS = ["k1", "k2", "k3"]
USERS = [("admin", "ADMIN"), ("u2", "MEMBER"), ("u3", "MEMBER")]
ENDPOINTS = ["/v2/person", "/v2/company", "prospecting/contact/enrich", "/v2/free"]
SOURCES = ["api", "chrome_extension", "salesforce"]
DIMENSIONS = ["ENDPOINT", "API_KEY", "SOURCE", "USER"]
#: The planted groups: A carries most of the 2026-04-15 spike, B the rest and all of the
#: 2026-04-01 one (endpoint, key, source, user).
A = ("prospecting/contact/enrich", "k3", "salesforce", "u3")
B = ("/v2/person", "k1", "chrome_extension", "u2")

SPIKES = """query($f: UsageFilter!, $g: Granularity!, $by: UsageDimension!, $n: Int!) {
  account { usage(filter: $f) {
    spikes(granularity: $g, by: $by, limit: $n) {
      bucket { start end calls credits } baselineCredits excessCredits score
      drivers { baselineCredits excessCredits
        row { key label calls credits shareOfCredits
              endpoint { path } apiKey { name } source { key } user { name } } }
    }
    breakdown(by: $by) { key label }
  } } }"""


# --- the test's own computation --------------------------------------------------------


def group_of(e: dict[str, Any], dimension: str) -> str:
    """The row key the API gives the event's group."""
    if dimension == "ENDPOINT":
        return e["endpoint"]
    if dimension == "SOURCE":
        return e["source"]
    if dimension == "API_KEY":
        return gid("ApiKey", e["apiKeyId"])
    return gid("User", e["userId"])


def buckets_of(events: list[dict[str, Any]], tz: ZoneInfo, hourly: bool = False):
    """Per local day (or local (day, hour, fold)): [calls, credits] in total and per group
    of each dimension."""
    total: dict[Any, list[int]] = defaultdict(lambda: [0, 0])
    groups: dict[tuple[str, Any, str], list[int]] = defaultdict(lambda: [0, 0])
    for e in events:
        local = when(e).astimezone(tz)
        b = (local.date(), local.hour, local.fold) if hourly else local.date()
        total[b][0] += 1
        total[b][1] += e["credits"]
        for dim in DIMENSIONS:
            groups[(dim, b, group_of(e, dim))][0] += 1
            groups[(dim, b, group_of(e, dim))][1] += e["credits"]
    return total, groups


def expected_day_spikes(events: list[dict[str, Any]], tz: ZoneInfo, first: date, last: date,
                        dimension: str) -> list[dict[str, Any]]:
    """The DAY spikes of ``[first, last)`` (local days) by the documented method."""
    total, groups = buckets_of(events, tz)
    found = []
    day = first
    while day < last:
        window = [day - timedelta(days=7 * k) for k in range(8, 0, -1)]
        values = [total[w][1] for w in window]
        if sum(v > 0 for v in values) >= 4:
            median = statistics.median(values)
            mad = statistics.median([abs(v - median) for v in values])
            scale = max(1.4826 * mad, 0.1 * median, 1.0)
            calls, credits = total[day]
            if (credits - median) / scale >= 3.5:
                drivers = []
                for (dim, b, key), (g_calls, g_credits) in groups.items():
                    if dim != dimension or b != day:
                        continue
                    base = statistics.median([groups.get((dim, w, key), [0, 0])[1]
                                              for w in window])
                    if g_credits - base > 0:
                        drivers.append({"key": key, "calls": g_calls, "credits": g_credits,
                                        "baseline": base, "excess": g_credits - base})
                drivers.sort(key=lambda d: (-d["excess"], -d["credits"], -d["calls"]))
                found.append({"day": day, "calls": calls, "credits": credits,
                              "baseline": median, "excess": credits - median,
                              "score": (credits - median) / scale, "drivers": drivers[:3]})
        day += timedelta(days=1)
    found.sort(key=lambda s: (-s["score"], s["day"]))
    return found


def check(got: list[dict[str, Any]], expected: list[dict[str, Any]], tz: ZoneInfo,
          rows: dict[str, str]) -> None:
    """The API's spikes equal the test's, number for number; driver rows are labelled
    like the breakdown's rows (``rows``: key -> label)."""
    assert len(got) == len(expected), (got, expected)
    for spike, want in zip(got, expected, strict=True):
        start = datetime(want["day"].year, want["day"].month, want["day"].day, tzinfo=tz)
        assert datetime.fromisoformat(spike["bucket"]["start"]) == start
        end = datetime.fromisoformat(spike["bucket"]["end"])
        assert end.astimezone(tz).date() == want["day"] + timedelta(days=1)
        assert (spike["bucket"]["calls"], spike["bucket"]["credits"]) == (want["calls"],
                                                                        want["credits"])
        assert spike["baselineCredits"] == want["baseline"]
        assert spike["excessCredits"] == want["excess"]
        assert spike["score"] == pytest.approx(want["score"])
        assert len(spike["drivers"]) == len(want["drivers"])
        for driver, w in zip(spike["drivers"], want["drivers"], strict=True):
            row = driver["row"]
            assert (row["key"], row["calls"], row["credits"]) == (w["key"], w["calls"],
                                                                  w["credits"])
            assert row["label"] == rows[w["key"]]
            assert row["shareOfCredits"] == pytest.approx(100 * w["credits"] / want["credits"])
            assert (driver["baselineCredits"], driver["excessCredits"]) == (w["baseline"],
                                                                            w["excess"])


# --- data ------------------------------------------------------------------------------

def background(first: date, last: date, tz: ZoneInfo, prefix: str) -> list[dict[str, Any]]:
    """Eight calls a day whose groups depend on the weekday (so a weekday's groups repeat
    week after week), plus one more every third week: a steady total with some spread."""
    out = []
    day = first
    while day < last:
        wd = day.weekday()
        for i in range(8):
            at = datetime(day.year, day.month, day.day, 1 + 2 * i, 17, tzinfo=tz)
            out.append(event(f"{prefix}-{day}-{i}", "acme", KEYS[(wd + 2 * i) % 3],
                             USERS[(3 * wd + i) % 3][0], ENDPOINTS[(wd + i) % 4],
                             SOURCES[(wd + i) % 3], 5 + i % 3, at))
        if (day - date(1970, 1, 5)).days // 7 % 3 == 0:
            at = datetime(day.year, day.month, day.day, 20, tzinfo=tz)
            out.append(event(f"{prefix}-{day}-x", "acme", "k1", "admin", "/v2/free", "api",
                             6, at))
        day += timedelta(days=1)
    return out


def planted(day: date, group: tuple[str, str, str, str], n: int, tz: ZoneInfo,
            prefix: str) -> list[dict[str, Any]]:
    endpoint, key, source, user = group
    return [event(f"{prefix}-{i}", "acme", key, user, endpoint, source, 10,
                  datetime(day.year, day.month, day.day, 10, i, tzinfo=tz)) for i in range(n)]


UTC_ZONE = ZoneInfo("UTC")
EVENTS = (background(date(2026, 1, 20), date(2026, 5, 1), UTC_ZONE, "bg")
          + planted(date(2026, 4, 15), A, 12, UTC_ZONE, "a")
          + planted(date(2026, 4, 15), B, 4, UTC_ZONE, "b")
          + planted(date(2026, 4, 1), B, 8, UTC_ZONE, "first"))
APRIL = {"from": "2026-04-01T00:00:00Z", "to": "2026-05-01T00:00:00Z"}


async def setup(client: httpx.AsyncClient, events: list[dict[str, Any]],
                time_zone: str = "UTC") -> None:
    await make_account(client, "acme", users=USERS, keys=KEYS, time_zone=time_zone)
    for n in range(0, len(events), 1000):
        result = await ingest(client, events[n:n + 1000])
        assert result["accepted"] == len(events[n:n + 1000]), result


async def spikes_of(client: httpx.AsyncClient, f: dict[str, str], by: str = "ENDPOINT",
                    granularity: str = "DAY", limit: int = 5) -> tuple[list, dict[str, str]]:
    body = await gql(client, SPIKES, {"f": f, "g": granularity, "by": by, "n": limit})
    assert "errors" not in body, body
    usage = body["data"]["account"]["usage"]
    return usage["spikes"], {r["key"]: r["label"] for r in usage["breakdown"]}


# --- tests -----------------------------------------------------------------------------

async def test_planted_spikes_and_their_drivers_for_each_dimension(client):
    await setup(client, EVENTS)
    for by in DIMENSIONS:
        got, rows = await spikes_of(client, APRIL, by)
        want = expected_day_spikes(EVENTS, UTC_ZONE, date(2026, 4, 1), date(2026, 5, 1), by)
        assert [s["day"] for s in want] == [date(2026, 4, 15), date(2026, 4, 1)]
        check(got, want, UTC_ZONE, rows)
        # The planted groups are the drivers, A first (120 credits over its baseline).
        a_key, b_key = (group_of({"endpoint": g[0], "apiKeyId": g[1], "source": g[2],
                                  "userId": g[3]}, by) for g in (A, B))
        assert [d["row"]["key"] for d in got[0]["drivers"]][:2] == [a_key, b_key]
        assert got[0]["drivers"][0]["excessCredits"] == 120.0
        assert [d["row"]["key"] for d in got[1]["drivers"]][0] == b_key
        first = got[0]["drivers"][0]["row"]
        if by == "ENDPOINT":
            assert first["endpoint"] == {"path": A[0]} and first["label"] == A[0]
        elif by == "API_KEY":
            assert first["apiKey"] == {"name": "Key k3"} and first["label"] == "Key k3"
        elif by == "SOURCE":
            assert first["source"] == {"key": "salesforce"}
        else:
            assert first["user"] == {"name": "User u3"} and first["label"] == "User u3"


async def test_the_first_bucket_gets_its_baseline_from_before_from(client):
    await setup(client, EVENTS)
    got, rows = await spikes_of(client, APRIL, "SOURCE")
    first = next(s for s in got if s["bucket"]["start"].startswith("2026-04-01"))
    # Its window is the 8 Wednesdays 2026-02-04 ... 2026-03-25, all before `from`.
    total, _ = buckets_of(EVENTS, UTC_ZONE)
    window = [total[date(2026, 4, 1) - timedelta(days=7 * k)][1] for k in range(1, 9)]
    assert all(v > 0 for v in window)
    assert first["baselineCredits"] == statistics.median(window)
    assert first["excessCredits"] == total[date(2026, 4, 1)][1] - statistics.median(window)
    # A range starting mid-day: the first bucket is clipped, its baseline still full days.
    got, _ = await spikes_of(client, {"from": "2026-04-01T09:00:00Z",
                                      "to": "2026-04-03T00:00:00Z"}, "SOURCE")
    assert [s["bucket"]["start"] for s in got] == ["2026-04-01T09:00:00+00:00"]
    assert got[0]["baselineCredits"] == statistics.median(window)
    clipped = sum(e["credits"] for e in EVENTS
                  if datetime(2026, 4, 1, 9, tzinfo=UTC) <= when(e) < datetime(2026, 4, 2,
                                                                               tzinfo=UTC))
    assert got[0]["bucket"]["credits"] == clipped


async def test_limit_and_order(client):
    await setup(client, EVENTS)
    got, _ = await spikes_of(client, APRIL, "ENDPOINT", limit=1)
    assert [s["bucket"]["start"] for s in got] == ["2026-04-15T00:00:00+00:00"]
    got, _ = await spikes_of(client, APRIL, "ENDPOINT", limit=0)
    assert got == []
    got, _ = await spikes_of(client, APRIL, "ENDPOINT", limit=50)
    assert [s["bucket"]["start"][:10] for s in got] == ["2026-04-15", "2026-04-01"]
    assert got[0]["score"] > got[1]["score"]


def steady(first: date, last: date) -> list[dict[str, Any]]:
    out = []
    day = first
    while day < last:
        for i in range(5):
            out.append(event(f"s-{day}-{i}", "acme", KEYS[i % 3], USERS[i % 3][0],
                             ENDPOINTS[i % 4], SOURCES[i % 3], 7,
                             datetime(day.year, day.month, day.day, 8 + i, tzinfo=UTC)))
        day += timedelta(days=1)
    return out


def weekly(first: date, last: date) -> list[dict[str, Any]]:
    """Busy weekdays (10 calls of 5 credits at 08:00-17:00), quiet weekends (one call)."""
    out = []
    day = first
    while day < last:
        for i in range(1 if day.weekday() >= 5 else 10):
            out.append(event(f"w-{day}-{i}", "acme", KEYS[i % 3], USERS[i % 3][0],
                             ENDPOINTS[i % 4], SOURCES[i % 3], 5,
                             datetime(day.year, day.month, day.day, 8 + i, tzinfo=UTC)))
        day += timedelta(days=1)
    return out


@pytest.mark.parametrize("traffic", [steady, weekly], ids=["steady", "weekly rhythm"])
async def test_steady_and_weekly_seasonal_traffic_have_no_spike(client, traffic):
    events = traffic(date(2026, 1, 1), date(2026, 5, 1))
    await setup(client, events)
    total, _ = buckets_of(events, UTC_ZONE)
    assert len({total[date(2026, 4, d)][1] for d in range(1, 31)}) == (
        1 if traffic is steady else 2)
    for granularity, f in (("DAY", APRIL), ("WEEK", APRIL),
                           ("HOUR", {"from": "2026-04-06T00:00:00Z",
                                     "to": "2026-04-13T00:00:00Z"})):
        got, _ = await spikes_of(client, f, "USER", granularity)
        assert got == [], (granularity, got)
    assert expected_day_spikes(events, UTC_ZONE, date(2026, 4, 1), date(2026, 5, 1),
                               "USER") == []


async def test_sparse_account_has_no_spike(client):
    events = [event(f"sp{i}", "acme", "k1", "admin", "/v2/person", "api", c,
                    datetime(2026, 4, d, 12, tzinfo=UTC))
              for i, (d, c) in enumerate([(2, 3), (9, 40), (16, 500), (20, 1), (28, 90)])]
    await setup(client, events)
    for granularity in ("HOUR", "DAY", "WEEK", "MONTH"):
        f = APRIL if granularity != "HOUR" else {"from": "2026-04-15T00:00:00Z",
                                                  "to": "2026-04-18T00:00:00Z"}
        got, _ = await spikes_of(client, f, "ENDPOINT", granularity)
        assert got == [], granularity


BERLIN = ZoneInfo("Europe/Berlin")


def hourly(first: datetime, last: datetime, prefix: str) -> list[dict[str, Any]]:
    """One call of 3 credits every real hour (so a 25-hour day holds 75)."""
    out = []
    t = first
    n = 0
    while t < last:
        out.append(event(f"{prefix}{n}", "acme", KEYS[n % 3], USERS[n % 3][0],
                         ENDPOINTS[n % 4], SOURCES[n % 3], 3, t + timedelta(minutes=20)))
        t += timedelta(hours=1)
        n += 1
    return out


async def test_a_time_zone_with_dst(client):
    events = hourly(datetime(2026, 8, 20, tzinfo=UTC), datetime(2026, 11, 10, tzinfo=UTC),
                    "h") + planted(date(2026, 10, 27), A, 6, BERLIN, "dst")
    await setup(client, events, time_zone="Europe/Berlin")
    total, _ = buckets_of(events, BERLIN)
    assert total[date(2026, 10, 25)][1] == 75  # 25 hours, no spike by its length alone
    f = {"from": "2026-10-01T00:00:00", "to": "2026-11-08T00:00:00"}  # Berlin wall time
    got, rows = await spikes_of(client, f, "API_KEY")
    want = expected_day_spikes(events, BERLIN, date(2026, 10, 1), date(2026, 11, 8), "API_KEY")
    assert [s["day"] for s in want] == [date(2026, 10, 27)]
    check(got, want, BERLIN, rows)
    assert got[0]["bucket"]["start"] == "2026-10-27T00:00:00+01:00"
    # HOUR buckets are real hours: the repeated 02:00 is two ordinary hours, and the
    # planted hour (10:00 on 2026-10-27, 6 x 10 credits more) is the only spike.
    got, _ = await spikes_of(client, {"from": "2026-10-24T00:00:00",
                                      "to": "2026-10-28T00:00:00"}, "ENDPOINT", "HOUR")
    assert [s["bucket"]["start"] for s in got] == ["2026-10-27T10:00:00+01:00"]
    assert (got[0]["baselineCredits"], got[0]["excessCredits"]) == (3.0, 60.0)
    # Drivers: each endpoint's median over 10:00 on the 14 days before. The hourly
    # rotation of endpoints shifts by one after the 25-hour day, so the background
    # endpoint of 10:00 on 2026-10-27 is new at that hour (baseline 0) and drives 3.
    _, groups = buckets_of(events, BERLIN, hourly=True)
    spike = (date(2026, 10, 27), 10, 0)
    window = [(spike[0] - timedelta(days=k), 10, 0) for k in range(1, 15)]
    want_drivers = []
    for (dim, b, key), (_, credits) in groups.items():
        if dim == "ENDPOINT" and b == spike:
            base = statistics.median(groups.get((dim, w, key), [0, 0])[1] for w in window)
            if credits > base:
                want_drivers.append((key, base, credits - base))
    want_drivers.sort(key=lambda d: -d[2])
    assert want_drivers[0] == (A[0], 0.0, 60.0) and len(want_drivers) == 2
    assert [(d["row"]["key"], d["baselineCredits"], d["excessCredits"])
            for d in got[0]["drivers"]] == want_drivers


async def test_known_argument_errors_refuse_before_any_sql(client):
    await setup(client, EVENTS[:10])
    with StatementCounter() as counter:
        await gql(client, "{ viewer { id } }")
    baseline = counter.count
    long_range = {"from": "2020-01-01T00:00:00Z", "to": "2025-06-01T00:00:00Z"}  # 1,978 days
    for query, argument in [
            ("query($f: UsageFilter!) { account { usage(filter: $f) { calls "
             "s: spikes(granularity: DAY, limit: -1) { score } } } }", "limit"),
            ("query($f: UsageFilter!) { account { usage(filter: $f) { "
             "series(granularity: DAY) { start } s: spikes(granularity: DAY) { score } } } }",
             "granularity")]:
        with StatementCounter() as counter:
            body = await gql(client, query, {"f": long_range if argument == "granularity"
                                             else APRIL})
        assert body["data"] is None, body
        (error,) = body["errors"]
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "argument": argument}
        assert error["path"] == ["account", "usage", "s"]
        assert counter.count == baseline
    assert error["message"] == (
        "account.usage.s(granularity): the range and the look-back read before it for the "
        "baseline hold more than 2,000 DAY buckets; choose a coarser granularity or a "
        "shorter range")


# --- statements ------------------------------------------------------------------------

DASHBOARD = """query($f: UsageFilter!) { account { usage(filter: $f) {
  calls series(granularity: DAY) { start credits }
  breakdown(by: API_KEY, limit: 5) { key apiKey { name } credits }
  spikes(granularity: DAY, by: API_KEY) { score bucket { start }
    drivers { excessCredits row { key label apiKey { name createdBy { name } } } } }
  byEndpoint: spikes(granularity: DAY, by: ENDPOINT) { drivers { row { endpoint { path } } } }
} } }"""


async def dashboard_statements(client: httpx.AsyncClient, account: str,
                               n_keys: int) -> tuple[int, dict[str, Any]]:
    keys = [f"{account}-k{i}" for i in range(n_keys)]
    await make_account(client, account, users=[("admin", "ADMIN")])
    await add_keys(client, account, keys)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    events = [event(f"{account}-e{i}", account, keys[i % n_keys], "admin", f"/v2/e{i % 9}",
                    "api", 2, start + timedelta(hours=3 * i)) for i in range(8 * 75)]
    events += [event(f"{account}-s{i}", account, keys[i % 4], "admin", "/v2/hot", "api", 9,
                     datetime(2026, 3, 10, 12, i, tzinfo=UTC)) for i in range(40)]
    assert (await ingest(client, events))["accepted"] == len(events)
    with StatementCounter() as counter:
        body = await gql(client, DASHBOARD, {"f": {"from": "2026-03-01T00:00:00Z",
                                                   "to": "2026-03-15T00:00:00Z"}},
                         user="admin", account=account)
    assert "errors" not in body, body
    return counter.count, body["data"]["account"]["usage"]


async def test_spikes_add_a_constant_number_of_statements(db_url):
    app = create_app(make_settings(db_url, max_query_cost=20_000), manage_db=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as client:
        small, small_data = await dashboard_statements(client, "small", 5)
        large, large_data = await dashboard_statements(client, "large", 500)
    for data in (small_data, large_data):
        assert [s["bucket"]["start"][:10] for s in data["spikes"]] == ["2026-03-10"]
        assert len(data["spikes"][0]["drivers"]) == 3
        assert [d["row"]["endpoint"] for d in data["byEndpoint"][0]["drivers"]] == [
            {"path": "/v2/hot"}]
    assert small == large
    print(f"dashboard with spikes: {small} statements")
    # authentication, the list sizes of the cost, the aggregates (totals, series,
    # breakdown, both spikes' series and look-back), the drivers of both spikes fields,
    # then the keys, their creators and the endpoints.
    assert small <= 8


async def test_the_drivers_statement_returns_at_most_the_candidates_per_spike(client):
    """Only the ``candidates`` groups with the most credits in a spike's bucket leave the
    database, each with its values in that bucket and its window's."""
    await setup(client, EVENTS)
    account = await Account.get(external_id="acme")
    paths = {e.id: e.path for e in await Endpoint.all()}
    day_us = 86_400 * 1_000_000
    spike = date(2026, 4, 15)
    days = [spike - timedelta(days=7 * k) for k in range(8, -1, -1)]  # window, then spike
    starts = [int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()) * 1_000_000
              for d in days]
    query = UsageQuery(account.id, starts[-1], starts[-1] + day_us)
    _, groups = buckets_of(EVENTS, UTC_ZONE)
    in_spike = sorted(((v[1], v[0], key) for (dim, b, key), v in groups.items()
                       if dim == "ENDPOINT" and b == spike), reverse=True)
    assert len(in_spike) == 4
    for candidates in (1, 2, 4):
        spec = SpikeDriversSpec(Dimension.ENDPOINT, tuple((s, s + day_us) for s in starts),
                                ((8, tuple(range(8))),), candidates)
        (values,) = await aggregate(query, [spec])
        assert len(values) == 1
        got = {paths[g]: {days[k]: v for k, v in by_bucket.items()}
               for g, by_bucket in values[0].items()}
        assert sorted(got) == sorted(key for _, _, key in in_spike[:candidates])
        for key, by_day in got.items():
            assert by_day == {d: tuple(groups[("ENDPOINT", d, key)]) for d in days
                              if ("ENDPOINT", d, key) in groups}



async def test_ranges_at_the_ends_of_the_calendar(client):
    """A look-back that would start before year 1 is left out; no error either end."""
    await setup(client, EVENTS[:10])
    for f in ({"from": "0001-01-02T00:00:00Z", "to": "0001-02-01T00:00:00Z"},
              {"from": "9999-11-01T00:00:00Z", "to": "9999-12-31T00:00:00Z"}):
        for granularity in ("HOUR", "DAY", "WEEK", "MONTH"):
            short = {"from": f["from"], "to": f["from"][:8] + "05T00:00:00Z"}
            got, _ = await spikes_of(client, short if granularity == "HOUR" else f, "USER",
                                     granularity)
            assert got == []
