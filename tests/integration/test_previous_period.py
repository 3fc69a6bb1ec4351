"""``UsageReport.previous`` (SPEC 6.2): the same filter over the period just before, as
long and ending at ``from``; for ranges that begin and end on month starts of the
filter's time zone, as many calendar months. Its totals, DAY series and breakdowns (the
Other row included) are computed here from the events ingested, and equal the report
asked for over the previous range explicitly; ``previous { previous }`` goes back
twice. A dashboard asking for both periods makes as many statements as one asking for
one period, with 5 keys or 500. On SQLite and PostgreSQL."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from support.config import make_settings
from support.events import when
from support.helpers import add_keys, event, gid, gql, ingest, make_account

from gql_usage.app import create_app
from gql_usage.storage.db import StatementCounter

KEYS = ["k1", "k2", "k3"]
USERS = [("admin", "ADMIN"), ("u2", "MEMBER")]
ENDPOINTS = ["/v2/person", "/v2/company", "prospecting/contact/enrich", "/v2/a", "/v2/b"]
SOURCES = ["api", "chrome_extension", "salesforce"]
SPAN_START = datetime(2025, 9, 20, tzinfo=UTC)
SPAN_END = datetime(2026, 4, 20, tzinfo=UTC)
#: Instants where month starts of the zones used here fall (events cluster around them).
EDGES = [datetime(2026, m, 1, tzinfo=ZoneInfo(z)).astimezone(UTC)
         for m in (1, 2, 3, 4) for z in ("America/New_York", "Asia/Kolkata",
                                         "Australia/Lord_Howe")] + [
    datetime(2025, 10, 1, tzinfo=ZoneInfo("Asia/Kolkata")).astimezone(UTC),
    datetime(2026, 1, 1, tzinfo=ZoneInfo("Asia/Kolkata")).astimezone(UTC)]

ROW = "key label isOther groupCount calls credits shareOfCredits"
BODY = f"""calls credits
  series(granularity: DAY) {{ start end calls credits }}
  byEndpoint: breakdown(by: ENDPOINT, limit: 2, other: true) {{ {ROW} }}
  byUser: breakdown(by: USER) {{ {ROW} user {{ id }} }}"""
QUERY = f"""query($f: UsageFilter!, $p: UsageFilter!) {{ account {{
  usage(filter: $f) {{ {BODY}
    previous {{ {BODY} previous {{ calls credits }} }} }}
  explicit: usage(filter: $p) {{ {BODY} }} }} }}"""


def make_events(seed: int = 3, n: int = 1500) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    span = int((SPAN_END - SPAN_START).total_seconds())
    for i in range(n):
        if i % 3 == 0:  # around month starts: which side of the edge counts
            at = rng.choice(EDGES) + timedelta(seconds=rng.randrange(-4 * 3600, 4 * 3600))
        else:
            at = SPAN_START + timedelta(seconds=rng.randrange(span))
        at += timedelta(microseconds=rng.randrange(10**6))
        e = event(f"p{i}", "acme", rng.choice(KEYS), rng.choice(USERS)[0],
                  rng.choice(ENDPOINTS), rng.choice(SOURCES), rng.randrange(0, 9), at)
        if i % 5 == 0:
            e["userId"] = None
        out.append(e)
    return out


EVENTS = make_events()



def chosen(lo: datetime, hi: datetime, keys: list[str] | None) -> list[dict[str, Any]]:
    return [e for e in EVENTS if lo <= when(e) < hi and (keys is None or e["apiKeyId"] in keys)]


def day_series(events: list[dict[str, Any]], lo: datetime, hi: datetime,
               tz: ZoneInfo) -> list[tuple[datetime, datetime, int, int]]:
    """DAY buckets from local midnights (zoneinfo), clipped to [lo, hi)."""
    out = []
    day: date = lo.astimezone(tz).date()
    while True:
        start = datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)
        nxt = day + timedelta(days=1)
        end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz).astimezone(UTC)
        b_lo, b_hi = max(start, lo), min(end, hi)
        if b_lo < b_hi:
            inside = [e for e in events if b_lo <= when(e) < b_hi]
            out.append((b_lo, b_hi, len(inside), sum(e["credits"] for e in inside)))
        if end >= hi:
            return out
        day = nxt


def groups(events: list[dict[str, Any]], by: str) -> list[tuple[str, int, int]]:
    acc: dict[str, list[int]] = {}
    for e in events:
        if by == "ENDPOINT":
            key = e["endpoint"]
        else:
            key = "" if e.get("userId") is None else gid("User", e["userId"])
        a = acc.setdefault(key, [0, 0])
        a[0] += 1
        a[1] += e["credits"]
    return sorted(((k, c, cr) for k, (c, cr) in acc.items()), key=lambda g: (-g[2], -g[1], g[0]))


def check(report: dict[str, Any], lo: datetime, hi: datetime, tz: ZoneInfo,
          keys: list[str] | None) -> None:
    """The report's numbers over [lo, hi), computed from the events."""
    events = chosen(lo, hi, keys)
    assert events, "each period holds calls"
    assert report["calls"] == len(events)
    assert report["credits"] == sum(e["credits"] for e in events)
    got = [(datetime.fromisoformat(b["start"]), datetime.fromisoformat(b["end"]), b["calls"],
            b["credits"]) for b in report["series"]]
    assert got == day_series(events, lo, hi, tz)
    by_endpoint = groups(events, "ENDPOINT")
    assert len(by_endpoint) > 2
    top = [(r["key"], r["calls"], r["credits"]) for r in report["byEndpoint"]]
    assert top[:2] == by_endpoint[:2]
    cut = by_endpoint[2:]
    assert top[2] == ("*", sum(c for _, c, _ in cut), sum(cr for _, _, cr in cut))
    assert report["byEndpoint"][2]["groupCount"] == len(cut)
    assert sum(r["shareOfCredits"] for r in report["byEndpoint"]) == pytest.approx(100.0)
    assert [(r["key"], r["calls"], r["credits"]) for r in report["byUser"]] == \
        groups(events, "USER")


CASES = [
    # (zone, from, to (wall clock in the zone), previous [lo, hi) in UTC, by hand,
    #  the period before that, key filter)
    # March in New York (EST, EDT from 8 March) -> February, then January.
    ("America/New_York", "2026-03-01T00:00:00", "2026-04-01T00:00:00",
     ("2026-02-01T05:00:00Z", "2026-03-01T05:00:00Z"),
     ("2026-01-01T05:00:00Z", "2026-02-01T05:00:00Z"), None),
    # January..March in Kolkata -> October..December 2025, then July..September 2025.
    ("Asia/Kolkata", "2026-01-01T00:00:00", "2026-04-01T00:00:00",
     ("2025-09-30T18:30:00Z", "2025-12-31T18:30:00Z"),
     ("2025-06-30T18:30:00Z", "2025-09-30T18:30:00Z"), ["k1", "k3"]),
    # April on Lord Howe (+11, +10:30 from 5 April) -> March (+11), then February.
    ("Australia/Lord_Howe", "2026-04-01T00:00:00", "2026-05-01T00:00:00",
     ("2026-02-28T13:00:00Z", "2026-03-31T13:00:00Z"),
     ("2026-01-31T13:00:00Z", "2026-02-28T13:00:00Z"), None),
    # Not aligned: 13 days 12:27:06.211 back, twice.
    ("UTC", "2026-03-10T12:34:56.789000", "2026-03-24T01:02:03",
     ("2026-02-25T00:07:50.578000Z", "2026-03-10T12:34:56.789000Z"),
     ("2026-02-11T11:40:44.367000Z", "2026-02-25T00:07:50.578000Z"), ["k2"]),
    # Aligned at `from` only (New York, 14 local days across the DST change: 335 hours).
    ("America/New_York", "2026-03-01T00:00:00", "2026-03-15T00:00:00",
     ("2026-02-15T06:00:00Z", "2026-03-01T05:00:00Z"),
     ("2026-02-01T07:00:00Z", "2026-02-15T06:00:00Z"), None),
]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}:{c[1][:10]}..{c[2][:10]}")
async def test_previous_is_the_report_over_the_period_before(client, case):
    zone, start, end, (p_lo, p_hi), (pp_lo, pp_hi), keys = case
    tz = ZoneInfo(zone)
    await make_account(client, "acme", time_zone=zone, users=USERS, keys=KEYS)
    for i in range(0, len(EVENTS), 500):  # cube rows, pending and raw events mixed
        assert (await ingest(client, EVENTS[i:i + 500]))["accepted"] == 500
    key_ids = None if keys is None else [gid("ApiKey", k) for k in keys]
    f = {"from": start, "to": end, "apiKeyIds": key_ids}  # the account's zone by default
    p = {"from": p_lo, "to": p_hi, "apiKeyIds": key_ids}
    body = await gql(client, QUERY, {"f": f, "p": p})
    assert "errors" not in body, body
    usage = body["data"]["account"]["usage"]
    lo = datetime.fromisoformat(start).replace(tzinfo=tz).astimezone(UTC)
    hi = datetime.fromisoformat(end).replace(tzinfo=tz).astimezone(UTC)
    check(usage, lo, hi, tz, keys)
    previous = usage["previous"]
    check(previous, utc(p_lo), utc(p_hi), tz, keys)
    before = previous.pop("previous")
    assert previous == body["data"]["account"]["explicit"]
    events = chosen(utc(pp_lo), utc(pp_hi), keys)
    assert before == {"calls": len(events), "credits": sum(e["credits"] for e in events)}


async def test_previous_before_year_one_is_refused_before_any_sql(client):
    await make_account(client, "acme", users=USERS, keys=KEYS)
    query = """query($f: UsageFilter!) { viewer { name } account { usage(filter: $f) {
      calls earlier: previous { calls } } } }"""
    f = {"from": "0001-01-01T00:00:00Z", "to": "0001-02-01T00:00:00Z", "timeZone": "UTC"}
    with StatementCounter() as counter:
        body = await gql(client, query, {"f": f})
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["argument"] == "filter.from"
    assert error["path"] == ["account", "usage", "earlier"]
    assert "before the year 1" in error["message"]
    assert not any("usage_cube" in s or "usage_event" in s for s in counter.statements)


# --- the statement budget -------------------------------------------------------------------

DASHBOARD = """query Dashboard($f: UsageFilter!) {
  viewer { name }
  account {
    name plan
    creditPool { granted used remaining }
    usage(filter: $f) {
      calls credits
      series(granularity: DAY) { start calls credits }
      byEndpoint: breakdown(by: ENDPOINT, limit: 5, other: true) {
        key label isOther groupCount endpoint { path } calls credits shareOfCredits }
      byKey: breakdown(by: API_KEY) { key label apiKey { name createdBy { name } } credits }
      PREVIOUS
    }
    apiKeys { id name createdBy { name } usage(filter: $f) { calls credits } }
  }
}"""
PREVIOUS = """previous {
        calls credits
        series(granularity: DAY) { start calls credits }
        byEndpoint: breakdown(by: ENDPOINT, limit: 5, other: true) {
          key label isOther groupCount endpoint { path } calls credits shareOfCredits }
        byKey: breakdown(by: API_KEY) { key label apiKey { name createdBy { name } } credits }
      }"""
FILTER = {"from": "2026-02-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}


async def dashboard_statements(client: httpx.AsyncClient, account: str,
                               n_keys: int) -> dict[bool, tuple[int, list[str], Any]]:
    """Per with/without ``previous``: (statements, their texts, the answer)."""
    keys = [f"{account}-k{i}" for i in range(n_keys)]
    await make_account(client, account, users=[("admin", "ADMIN")], keys=[])
    await add_keys(client, account, keys)
    start = datetime(2026, 1, 1, tzinfo=UTC)  # January and February
    events = [event(f"{account}-e{i}", account, keys[i % n_keys], "admin", f"/v2/e{i % 9}",
                    "api", 1 + i % 3, start + timedelta(minutes=83 * i)) for i in range(1000)]
    assert (await ingest(client, events))["accepted"] == 1000
    out = {}
    for with_previous in (False, True):
        query = DASHBOARD.replace("PREVIOUS", PREVIOUS if with_previous else "")
        with StatementCounter() as counter:
            body = await gql(client, query, {"f": FILTER}, user="admin", account=account)
        assert "errors" not in body, body
        out[with_previous] = (counter.count, counter.statements, body["data"])
    return out


async def test_previous_adds_no_statement_with_5_or_500_keys(db_url):
    # 500 keys' lists cost what they hold: this account's maximum cost is raised.
    app = create_app(make_settings(db_url, max_query_cost=40_000), manage_db=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as client:
        small = await dashboard_statements(client, "small", 5)
        large = await dashboard_statements(client, "large", 500)
    jan = sum(1 for i in range(1000) if 83 * i < 31 * 24 * 60)
    for runs in (small, large):
        data = runs[True][2]["account"]
        usage, previous = data["usage"], data["usage"]["previous"]
        assert (usage["calls"], previous["calls"]) == (1000 - jan, jan)  # February, January
        assert sum(k["usage"]["calls"] for k in data["apiKeys"]) == usage["calls"]
        assert [r["groupCount"] for r in previous["byEndpoint"]] == [1, 1, 1, 1, 1, 4]
        # Both periods' aggregates (and the credit pool's) take no more statements than
        # one period's.
        analytics = {p: [s for s in runs[p][1] if "usage_cube" in s] for p in (False, True)}
        assert len(analytics[True]) == len(analytics[False])
    counts = {(n, p): runs[p][0] for n, runs in (("small", small), ("large", large))
              for p in (False, True)}
    print(f"dashboard statements: {counts}")
    assert counts[("small", True)] == counts[("large", True)]
    assert counts[("small", True)] == counts[("small", False)]
    assert counts[("large", True)] == counts[("large", False)]
    assert counts[("small", True)] <= 7


@pytest.mark.parametrize(("user", "plan", "code"), [
    ("u2", "PRO", "FORBIDDEN"), ("admin", "FREE", "PLAN_UPGRADE_REQUIRED")])
async def test_previous_is_guarded_with_its_report(client, user, plan, code):
    """``previous`` is reached only through ``Account.usage`` (@adminOnly @paidPlan): a
    member or a Free-plan admin gets ``usage: null`` with the refusal, nothing of it."""
    await make_account(client, "acme", plan=plan, users=USERS, keys=KEYS)
    assert (await ingest(client, EVENTS[:50]))["accepted"] == 50
    query = """query($f: UsageFilter!) { account { name usage(filter: $f) {
      calls previous { calls previous { credits } } } } }"""
    body = await gql(client, query, {"f": {"from": "2026-01-01T00:00:00Z",
                                           "to": "2026-02-01T00:00:00Z"}}, user=user)
    assert body["data"] == {"account": {"name": "Account acme", "usage": None}}
    assert [e["extensions"]["code"] for e in body["errors"]] == [code]
