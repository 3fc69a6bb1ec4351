"""The "Other" row of ``breakdown(by:, limit:, other: true)`` (SPEC 6.2): one last row
``key: "*"``, ``label: "Other"``, ``isOther: true`` summing the rows cut by ``limit``
(``groupCount`` of them), no row without a cut; ordinary rows ``isOther: false``,
``groupCount: 1``. Every number is computed here from the events ingested, for every
dimension (the calls without a user included), on SQLite and PostgreSQL, from cube rows,
pending events and raw events at once (the range's edges cut 15-minute slots)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from support.events import when
from support.helpers import event, gid, gql, ingest, make_account

KEYS = ["k1", "k2", "k3", "k4", "k5"]
USERS = [("admin", "ADMIN"), ("u2", "MEMBER"), ("u3", "MEMBER")]
ENDPOINTS = ["/v2/person", "/v2/company", "prospecting/contact/enrich", "/v2/a", "/v2/b",
             "/v2/c", "/v2/free"]
SOURCES = ["api", "chrome_extension", "salesforce", "hubspot"]
T0 = datetime(2026, 1, 5, tzinfo=UTC)
FROM = datetime(2026, 1, 6, 3, 7, tzinfo=UTC)
TO = datetime(2026, 1, 23, 19, 41, tzinfo=UTC)
DIMENSIONS = ["ENDPOINT", "API_KEY", "SOURCE", "USER"]
ROW = ("key label isOther groupCount calls credits shareOfCredits "
       "endpoint { path } apiKey { id name } source { key } user { id name }")


def make_events(seed: int = 5, n: int = 640) -> list[dict[str, Any]]:
    """Calls over 20 days; a quarter without a user; "/v2/free" costs nothing; small
    credit values, so rows tie on credits (and on calls)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        at = T0 + timedelta(seconds=rng.randrange(20 * 86400), microseconds=rng.randrange(10**6))
        endpoint = rng.choice(ENDPOINTS)
        e = event(f"o{i}", "acme", rng.choice(KEYS), rng.choice(USERS)[0], endpoint,
                  rng.choice(SOURCES), 0 if endpoint == "/v2/free" else rng.randrange(0, 4), at)
        if i % 4 == 0:
            e["userId"] = None
        out.append(e)
    return out


EVENTS = make_events()



def row_key(e: dict[str, Any], by: str) -> str:
    """The key the API gives the event's row."""
    if by == "ENDPOINT":
        return str(e["endpoint"])
    if by == "SOURCE":
        return str(e["source"])
    if by == "API_KEY":
        return gid("ApiKey", e["apiKeyId"])
    return "" if e.get("userId") is None else gid("User", e["userId"])


def expected_groups(events: list[dict[str, Any]], by: str) -> list[tuple[str, int, int]]:
    """(key, calls, credits) of every group with calls, in the API's order."""
    groups: dict[str, list[int]] = {}
    for e in events:
        acc = groups.setdefault(row_key(e, by), [0, 0])
        acc[0] += 1
        acc[1] += e["credits"]
    return sorted(((k, c, cr) for k, (c, cr) in groups.items()),
                  key=lambda g: (-g[2], -g[1], g[0]))


def in_range(events: list[dict[str, Any]], lo: datetime, hi: datetime) -> list[dict[str, Any]]:
    return [e for e in events if lo <= when(e) < hi]


def check_rows(rows: list[dict[str, Any]], groups: list[tuple[str, int, int]], by: str,
               limit: int | None, other: bool) -> None:
    total = sum(cr for _, _, cr in groups)
    shown = groups if limit is None else groups[:limit]
    cut = groups[len(shown):]
    with_other = other and bool(cut)
    assert len(rows) == len(shown) + (1 if with_other else 0)
    for row, (key, calls, credits) in zip(rows, shown, strict=False):
        assert (row["key"], row["calls"], row["credits"]) == (key, calls, credits)
        assert row["isOther"] is False
        assert row["groupCount"] == 1
        assert row["shareOfCredits"] == pytest.approx(100 * credits / total if total else 0.0)
        if by == "USER" and key == "":
            assert (row["label"], row["user"]) == ("No user", None)
    if not with_other:
        assert all(r["key"] != "*" and not r["isOther"] for r in rows)
        return
    last = rows[-1]
    calls, credits = sum(c for _, c, _ in cut), sum(cr for _, _, cr in cut)
    assert last == {
        "key": "*", "label": "Other", "isOther": True, "groupCount": len(cut),
        "calls": calls, "credits": credits, "shareOfCredits": last["shareOfCredits"],
        "endpoint": None, "apiKey": None, "source": None, "user": None}
    assert last["shareOfCredits"] == pytest.approx(100 * credits / total if total else 0.0)
    # The rows and the Other row are the whole report.
    assert sum(r["calls"] for r in rows) == sum(c for _, c, _ in groups)
    assert sum(r["credits"] for r in rows) == total
    if total:
        assert sum(r["shareOfCredits"] for r in rows) == pytest.approx(100.0, abs=1e-9)


async def setup(client) -> None:
    await make_account(client, "acme", users=USERS, keys=KEYS)
    for i in range(0, len(EVENTS), 160):  # cube rows, pending and raw events mixed
        assert (await ingest(client, EVENTS[i:i + 160]))["accepted"] == 160


def report_query(by: str, limits: list[int | None]) -> str:
    fields = []
    for i, limit in enumerate(limits):
        arg = "" if limit is None else f", limit: {limit}"
        fields.append(f"o{i}: breakdown(by: {by}{arg}, other: true) {{ {ROW} }}")
        fields.append(f"p{i}: breakdown(by: {by}{arg}) {{ {ROW} }}")
    return ("query($f: UsageFilter!) { account { usage(filter: $f) { calls credits "
            + " ".join(fields) + " } } }")


@pytest.mark.parametrize("by", DIMENSIONS)
async def test_other_row_sums_the_rows_cut(client, by):
    await setup(client)
    chosen = in_range(EVENTS, FROM, TO)
    groups = expected_groups(chosen, by)
    assert len(groups) >= 4, groups  # enough groups for every kind of cut
    if by == "USER":
        assert any(k == "" for k, _, _ in groups)  # the calls without a user are a row
    n = len(groups)
    limits: list[int | None] = [0, 1, 2, 3, n - 1, n, n + 3, None]
    f = {"from": FROM.isoformat(), "to": TO.isoformat()}
    body = await gql(client, report_query(by, limits), {"f": f})
    assert "errors" not in body, body
    usage = body["data"]["account"]["usage"]
    assert usage["calls"] == len(chosen)
    for i, limit in enumerate(limits):
        check_rows(usage[f"o{i}"], groups, by, limit, other=True)
        check_rows(usage[f"p{i}"], groups, by, limit, other=False)
    # limit 0: the Other row alone is the whole report.
    only = usage["o0"]
    assert len(only) == 1 and only[0]["groupCount"] == n
    assert only[0]["calls"] == len(chosen)
    assert only[0]["shareOfCredits"] == pytest.approx(100.0)


async def test_other_row_follows_the_filter_and_zero_credits(client):
    await setup(client)
    # Only the free endpoint: every row has 0 credits, so every share is 0, Other's too.
    f = {"from": FROM.isoformat(), "to": TO.isoformat(), "endpoints": ["/v2/free"]}
    chosen = [e for e in in_range(EVENTS, FROM, TO) if e["endpoint"] == "/v2/free"]
    query = ("query($f: UsageFilter!) { account { usage(filter: $f) { "
             f"byKey: breakdown(by: API_KEY, limit: 2, other: true) {{ {ROW} }} "
             f"byUser: breakdown(by: USER, limit: 1, other: true) {{ {ROW} }} }} }} }}")
    body = await gql(client, query, {"f": f})
    assert "errors" not in body, body
    usage = body["data"]["account"]["usage"]
    keys = expected_groups(chosen, "API_KEY")
    assert len(keys) > 2 and all(cr == 0 for _, _, cr in keys)
    check_rows(usage["byKey"], keys, "API_KEY", 2, other=True)
    assert [r["shareOfCredits"] for r in usage["byKey"]] == [0.0, 0.0, 0.0]
    check_rows(usage["byUser"], expected_groups(chosen, "USER"), "USER", 1, other=True)
    # Filters on two dimensions: sources and users (the calls without a user are
    # filtered out by a user filter).
    f = {"from": FROM.isoformat(), "to": TO.isoformat(), "sources": ["api", "hubspot"],
         "userIds": [gid("User", "u2"), gid("User", "u3")]}
    chosen = [e for e in in_range(EVENTS, FROM, TO) if e["source"] in ("api", "hubspot")
              and e.get("userId") in ("u2", "u3")]
    query = ("query($f: UsageFilter!) { account { usage(filter: $f) { "
             f"breakdown(by: ENDPOINT, limit: 2, other: true) {{ {ROW} }} }} }} }}")
    body = await gql(client, query, {"f": f})
    assert "errors" not in body, body
    check_rows(body["data"]["account"]["usage"]["breakdown"],
               expected_groups(chosen, "ENDPOINT"), "ENDPOINT", 2, other=True)


async def test_no_rows_no_other_row(client):
    await setup(client)
    f = {"from": "2027-01-01T00:00:00Z", "to": "2027-02-01T00:00:00Z"}
    query = ("query($f: UsageFilter!) { account { usage(filter: $f) { calls "
             "a: breakdown(by: ENDPOINT, limit: 0, other: true) { key } "
             "b: breakdown(by: USER, limit: 2, other: true) { key } } } }")
    body = await gql(client, query, {"f": f})
    assert body == {"data": {"account": {"usage": {"calls": 0, "a": [], "b": []}}}}
