"""Alert delivery by a real server process (``gql-usage serve``) to a real receiver:
alerts recorded while the receiver is down survive a SIGKILL of the server and are
delivered, signed, after the restart; parallel requests to the server crossing one
threshold make one alert, delivered once. Both databases."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import httpx
from support.alerts import PERIOD, SECRET, USERS, at, ev, expected_alerts, verified, without_ids
from support.helpers import SERVICE, make_account
from support.ports import free_port
from support.serve import served
from support.webhook_receiver import DEADLINE_S, webhook_receiver

from gql_usage.storage.db import connection

#: Small delivery settings, so that retries happen within the test.
WEBHOOK = {"webhook_secret": SECRET, "webhook_timeout_seconds": "2",
           "webhook_retry_base_seconds": "0.2", "webhook_retry_max_seconds": "1",
           "webhook_poll_seconds": "0.2"}


async def post(client: httpx.AsyncClient, batch: list[dict[str, Any]]) -> dict[str, Any]:
    response = await client.post("/v1/usage-events", json=batch, headers=SERVICE, timeout=60)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["rejected"] == [], body
    return body


async def alert_rows() -> list[dict[str, Any]]:
    return await connection().execute_query_dict(
        "SELECT uid, threshold, used, attempts, delivered_at_us, last_error FROM usage_alert"
        " ORDER BY threshold")


async def wait_rows(predicate: Any, what: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        rows = await alert_rows()
        if predicate(rows):
            return rows
        assert time.monotonic() < deadline, f"gave up waiting for {what}: {rows}"
        await asyncio.sleep(0.05)


async def test_alerts_recorded_before_a_sigkill_are_delivered_after_the_restart(db_url,
                                                                               tmp_path):
    port = free_port()  # the receiver's: nobody listens there until after the kill
    url = f"http://127.0.0.1:{port}/hooks/gql-usage"
    batches = [[ev(1, 50, at(2)), ev(2, 35, at(3), key="k2")], [ev(3, 20, at(4))]]
    expected = expected_alerts(batches, granted=100, thresholds=[80, 100])
    assert [(a["threshold"], a["used"]) for a in expected] == [(80, 85), (100, 105)]
    async with served(db_url, tmp_path, webhook_url=url, **WEBHOOK) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            await make_account(client, "acme", users=USERS, keys=["k1", "k2"], granted=100,
                               period=(PERIOD[0].isoformat(), PERIOD[1].isoformat()))
            for batch in batches:
                await post(client, batch)
        # Stored, attempted against the dead receiver, not delivered: then killed.
        failing = await wait_rows(lambda rows: len(rows) == 2 and all(
            r["attempts"] >= 1 for r in rows), "two failed attempts")
        assert all(r["delivered_at_us"] is None and r["last_error"] for r in failing)
        server.signal(signal.SIGKILL)
        assert await asyncio.to_thread(server.wait, 30) == -signal.SIGKILL
        with webhook_receiver(port) as receiver:
            await server.start()
            requests = await asyncio.to_thread(receiver.wait_requests, 2)
            rows = await wait_rows(lambda rows: all(r["delivered_at_us"] for r in rows),
                                   "delivery after the restart")
    payloads = sorted((verified(r) for r in requests), key=lambda p: p["threshold"])
    assert without_ids(payloads) == expected
    assert [p["id"] for p in payloads] == [r["uid"] for r in rows]
    assert all(r["attempts"] >= 2 and r["last_error"] is None for r in rows)
    assert len(requests) == 2  # each delivered once (nothing failed after the restart)


async def test_parallel_requests_to_a_server_crossing_one_threshold_make_one_alert(db_url,
                                                                                  tmp_path):
    with webhook_receiver() as receiver:
        async with served(db_url, tmp_path, webhook_url=receiver.url, **WEBHOOK) as server:
            async with httpx.AsyncClient(base_url=server.base_url) as client:
                await make_account(client, "acme", users=USERS, keys=["k1", "k2"],
                                   granted=1000,
                                   period=(PERIOD[0].isoformat(), PERIOD[1].isoformat()))
                await post(client, [ev("base", 470, at(2))])
                batches = [[ev(f"p{i}-{j}", 5, at(3, j), key=("k1", "k2")[i % 2])
                            for j in range(10)] for i in range(8)]
                answers = await asyncio.gather(*(post(client, b) for b in batches))
                assert sum(a["accepted"] for a in answers) == 80
            requests = await asyncio.to_thread(receiver.wait_requests, 1)
            [row] = await wait_rows(lambda rows: rows and rows[0]["delivered_at_us"],
                                    "the delivery")
    [payload] = [verified(r) for r in requests]
    assert (payload["type"], payload["threshold"], payload["limit"]) == (
        "pool.threshold", 80, 1000)
    # Recorded by the batch that took the total past 800 (470 + 50 per batch): the
    # total that batch left, whichever of the parallel batches it was.
    assert payload["used"] in {470 + 50 * n for n in range(1, 9)} and payload["used"] >= 800
    assert (row["uid"], row["used"], row["attempts"]) == (payload["id"], payload["used"], 1)
