"""Calls without a user (SPEC 6.1): ``userId`` absent or null. They count everywhere; in a
``USER`` breakdown they form one row ``key: ""``, ``label: "No user"``, ``user: null``.
Exact numbers on both databases, from compacted cube rows, pending events and raw events
(the range's partial days) at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from support.helpers import SERVICE, event, gid, gql, make_account

from gql_usage.storage.cube import compact_all
from gql_usage.storage.db import connection

pytestmark = pytest.mark.citus

T0 = datetime(2026, 1, 10, 0, 0, tzinfo=UTC)
# Not slot-aligned: the edges are read from the raw events (the call at -67 h 07 min,
# which has no user, among them), the rest from cube rows and pending events.
FROM = T0 - timedelta(days=3) + timedelta(hours=5, minutes=3)
TO = T0 + timedelta(days=3, hours=7, minutes=3)

QUERY = """query($f: UsageFilter!) { account { usage(filter: $f) {
  calls credits
  series(granularity: DAY) { calls credits }
  byUser: breakdown(by: USER) { key label calls credits shareOfCredits user { id name } }
  byEndpoint: breakdown(by: ENDPOINT) { key calls credits }
} creditPool { used } } }"""


def _events(prefix: str, hours: range) -> list[dict[str, Any]]:
    """Every third call has no user (absent, or null), the others admin or bob."""
    out = []
    for n, h in enumerate(hours):
        at = T0 + timedelta(hours=h, minutes=7)
        user = ("admin", None, "bob")[n % 3]
        e = event(f"{prefix}-{n}", "acme", "k1", user or "", ("/v2/person", "/v2/company")[n % 2],
                  "api", n % 5 + 1, at)
        if user is None:
            if n % 2:
                e["userId"] = None
            else:
                del e["userId"]
        out.append(e)
    return out


def _expected(events: list[dict[str, Any]], users: set[str | None] | None = None
              ) -> dict[str, Any]:
    lo, hi = FROM.isoformat(), TO.isoformat()
    chosen = [e for e in events if lo <= e["occurredAt"] < hi
              and (users is None or e.get("userId") in users)]
    by_user: dict[str | None, list[int]] = {}
    for e in chosen:
        acc = by_user.setdefault(e.get("userId"), [0, 0])
        acc[0] += 1
        acc[1] += e["credits"]
    return {"calls": len(chosen), "credits": sum(e["credits"] for e in chosen),
            "by_user": by_user}


async def _post(client: Any, events: list[dict[str, Any]]) -> dict[str, Any]:
    r = await client.post("/v1/usage-events", json=events, headers=SERVICE)
    assert r.status_code == 200, r.text
    return r.json()


async def test_calls_without_a_user_count_everywhere_and_form_one_row(client):
    await make_account(client, "acme", users=[("admin", "ADMIN"), ("bob", "MEMBER")],
                       keys=["k1"], period=("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"))
    compacted = _events("c", range(-80, 20))   # folded into the cube below
    pending = _events("p", range(20, 90))      # left pending
    assert (await _post(client, compacted))["accepted"] == len(compacted)
    assert await compact_all(cube_after_events=0) == len(compacted)
    assert (await _post(client, pending))["accepted"] == len(pending)
    events = compacted + pending
    _, rows = await connection().execute_query(
        "SELECT COUNT(*) FROM usage_event WHERE user_id IS NULL")
    assert rows[0][0] == sum(1 for e in events if e.get("userId") is None) == 33 + 23

    variables = {"f": {"from": FROM.isoformat(), "to": TO.isoformat()}}
    data = (await gql(client, QUERY, variables))["data"]["account"]
    usage, want = data["usage"], _expected(events)
    assert (usage["calls"], usage["credits"]) == (want["calls"], want["credits"]) == (146, 439)
    assert sum(b["calls"] for b in usage["series"]) == want["calls"]
    assert sum(b["credits"] for b in usage["series"]) == want["credits"]
    assert sum(r["credits"] for r in usage["byEndpoint"]) == want["credits"]
    assert data["creditPool"]["used"] == sum(e["credits"] for e in events)
    rows_by_key = {r["key"]: r for r in usage["byUser"]}
    assert set(rows_by_key) == {"", gid("User", "admin"), gid("User", "bob")}
    no_user = rows_by_key[""]
    assert no_user["label"] == "No user" and no_user["user"] is None
    assert [no_user["calls"], no_user["credits"]] == want["by_user"][None] == [49, 149]
    assert [rows_by_key[gid("User", "admin")]["calls"],
            rows_by_key[gid("User", "admin")]["credits"]] == want["by_user"]["admin"]
    assert rows_by_key[gid("User", "bob")]["user"]["name"] == "User bob"
    assert sum(r["calls"] for r in usage["byUser"]) == want["calls"]
    assert abs(sum(r["shareOfCredits"] for r in usage["byUser"]) - 100) < 1e-9

    # A limit is cut in SQL: the "No user" row takes its place in the order like any row
    # (credits, calls, then key; its key "" sorts first among equals).
    order = sorted(want["by_user"].items(), key=lambda kv: (
        -kv[1][1], -kv[1][0], "" if kv[0] is None else gid("User", kv[0])))
    for limit in (1, 2, 3):
        top = (await gql(client, """query($f: UsageFilter!, $n: Int) { account { usage(
            filter: $f) { breakdown(by: USER, limit: $n) { key label calls credits } } } }""",
                         {**variables, "n": limit}))["data"]["account"]["usage"]["breakdown"]
        assert [(r["key"], r["calls"], r["credits"]) for r in top] == [
            ("" if u is None else gid("User", u), c, cr) for u, (c, cr) in order[:limit]]
        assert all(r["label"] == "No user" for r in top if r["key"] == "")

    # userIds selects users: calls without a user are not any user's.
    variables["f"]["userIds"] = [gid("User", "admin")]
    filtered = (await gql(client, QUERY, variables))["data"]["account"]["usage"]
    want = _expected(events, {"admin"})
    assert (filtered["calls"], filtered["credits"]) == (want["calls"], want["credits"])
    assert [r["key"] for r in filtered["byUser"]] == [gid("User", "admin")]


async def test_resending_calls_without_a_user_is_idempotent(client):
    await make_account(client, "acme", users=[("admin", "ADMIN")], keys=["k1"])
    base = event("n1", "acme", "k1", "admin", "/v2/person", "api", 3, T0)
    no_user = {k: v for k, v in base.items() if k != "userId"}
    assert await _post(client, [no_user]) == {"accepted": 1, "duplicates": 0, "rejected": []}
    # Absent and null are the same call; with a user it is different content.
    again = await _post(client, [no_user, {**no_user, "userId": None}, base,
                                 {**no_user, "id": "n2", "userId": ""},
                                 {**no_user, "id": "n3", "userId": "ghost"}])
    assert (again["accepted"], again["duplicates"], again["rejectedIndexes"]) == (0, 2, [2, 3, 4])
    reasons = {r["index"]: r["reason"] for r in again["rejected"]}
    assert "different content" in reasons[2]
    assert reasons[3].startswith("userId:") and "unknown user 'ghost'" in reasons[4]
    _, rows = await connection().execute_query("SELECT event_id, user_id FROM usage_event")
    assert [tuple(r) for r in rows] == [("n1", None)]
