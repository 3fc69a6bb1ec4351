from datetime import UTC, datetime

from support.helpers import event, gql, ingest, make_account


async def test_ingest_then_report(client):
    await make_account(client, "acme", users=[("admin", "ADMIN")], keys=["k1"])
    t = datetime(2026, 1, 5, 10, 7, tzinfo=UTC)
    result = await ingest(client, [event("e1", "acme", "k1", "admin", "/v2/person", "api", 3, t)])
    assert result == {"accepted": 1, "duplicates": 0, "rejected": []}
    body = await gql(client, """{ account { usage(filter: {from: "2026-01-01T00:00:00Z",
        to: "2026-02-01T00:00:00Z"}) { calls credits series(granularity: WEEK) { start calls }
        breakdown(by: ENDPOINT) { key label shareOfCredits } } } }""")
    assert "errors" not in body, body
    usage = body["data"]["account"]["usage"]
    assert (usage["calls"], usage["credits"]) == (1, 3)
