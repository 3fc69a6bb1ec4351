"""Alerts (SPEC 6.3): thresholds of the pool and of key budgets reached at ingestion are
recorded once per (subject, threshold, period) and delivered, signed, to a real HTTP
receiver on 127.0.0.1 until it answers 2xx; ``Account.alerts`` lists them.

Every expected alert is computed here, in plain Python, from the events the test sent
(``expected_alerts``), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from support.alerts import (
    PERIOD,
    SECRET,
    USERS,
    at,
    ev,
    expected_alerts,
    verified,
    without_ids,
)
from support.helpers import SERVICE, gid, gql, ingest, make_account, put
from support.webhook_receiver import DEADLINE_S, Receiver, webhook_receiver

from gql_usage.alerts import delivery as delivery_module
from gql_usage.alerts.delivery import AlertDelivery, DeliveryConfig
from gql_usage.alerts.wakeup import listening
from gql_usage.storage.db import connection
from gql_usage.storage.distribution import distributed
from gql_usage.storage.models import Account, ApiKey

pytestmark = pytest.mark.citus

ALERTS = """query($first: Int) { account { alerts(first: $first) {
  id type threshold used limit occurredAt periodStart periodEnd deliveryState attempts
  lastAttemptAt lastError nextAttemptAt deliveredAt apiKey { id name } } } }"""


def config(receiver: Receiver | str, **overrides: Any) -> DeliveryConfig:
    url = receiver if isinstance(receiver, str) else receiver.url
    values = {"timeout_s": 5.0, "retry_base_s": 0.05, "retry_max_s": 0.2, "poll_s": 0.05,
              **overrides}
    return DeliveryConfig(url=url, secret=SECRET, **values)


class Clock:
    """A clock the test moves (delivery reads the time from it)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def setup(client: httpx.AsyncClient, *, granted: int = 1000,
                thresholds: str | None = None, keys: Sequence[str] = ("k1", "k2"),
                plan: str = "PRO") -> None:
    await make_account(client, "acme", users=USERS, keys=keys, granted=granted, plan=plan,
                       period=(PERIOD[0].isoformat(), PERIOD[1].isoformat()))
    if thresholds is not None:
        await Account.filter(external_id="acme").update(alert_thresholds=thresholds)


async def set_budget(key: str, budget: int | None) -> None:
    await ApiKey.filter(external_id=key).update(credit_budget=budget)


async def stored_alerts() -> list[dict[str, Any]]:
    return await connection().execute_query_dict(
        "SELECT uid, kind, api_key_id, threshold, used, credit_limit, attempts,"
        " delivered_at_us, last_error FROM usage_alert ORDER BY id")


async def listed(client: httpx.AsyncClient, first: int | None = 50,
                 user: str = "admin") -> Any:
    answer = await gql(client, ALERTS, {"first": first}, user=user)
    return answer


async def deliver_all(delivery: AlertDelivery, receiver: Receiver, n: int) -> list[Any]:
    """Rounds of delivery until the receiver has ``n`` requests (each round is the real
    claim-send-record cycle)."""
    deadline = time.monotonic() + DEADLINE_S
    while len(receiver.requests) < n:
        assert time.monotonic() < deadline, f"only {len(receiver.requests)} of {n} delivered"
        await delivery.deliver_due()
    return list(receiver.requests)


# --- recording and payloads -----------------------------------------------------------


async def test_pool_thresholds_alert_once_each_signed_with_the_computed_payload(client):
    await setup(client, granted=1000)
    batches = [
        [ev(1, 300, at(2)), ev(2, 200, at(3), key="k2")],                # 500: nothing
        [ev(3, 250, at(4)), ev(4, 50, at(4, 13)), ev(1, 300, at(2))],     # 800 (e1 resent): 80%
        [ev(5, 0, at(5)), ev(6, 150, at(6), key="k2")],                  # 950
        [ev(7, 60, at(7))],                                              # 1010: 100%
        [ev(8, 500, at(8))],                                             # nothing new
    ]
    expected = expected_alerts(batches, granted=1000, thresholds=[80, 100])
    assert [(a["threshold"], a["used"]) for a in expected] == [(80, 800), (100, 1010)]
    times = []
    for batch in batches:
        before = time.time()
        await ingest(client, batch)
        times.append((before, time.time()))
    stored = await stored_alerts()
    assert [(a["kind"], a["threshold"], a["used"], a["credit_limit"], a["attempts"])
            for a in stored] == [("pool.threshold", 80, 800, 1000, 0),
                                 ("pool.threshold", 100, 1010, 1000, 0)]
    with webhook_receiver() as receiver:
        delivery = AlertDelivery(config(receiver))
        try:
            requests = await deliver_all(delivery, receiver, 2)
            assert await delivery.deliver_due() == 0  # nothing left to send
        finally:
            await delivery.aclose()
    payloads = [verified(r) for r in requests]
    payloads.sort(key=lambda p: p["threshold"])
    assert without_ids(payloads) == expected
    assert len({p["id"] for p in payloads}) == 2
    assert {p["id"] for p in payloads} == {a["uid"] for a in stored}
    # occurredAt: when ingestion recorded it (batch 2 and batch 4).
    for payload, (before, after) in zip(payloads, (times[1], times[3]), strict=True):
        occurred = datetime.fromisoformat(payload["occurredAt"]).timestamp()
        assert before - 1e-3 <= occurred <= after + 1e-3
    answer = await listed(client)
    assert "errors" not in answer, answer
    alerts = answer["data"]["account"]["alerts"]
    assert [(a["type"], a["threshold"], a["used"], a["limit"], a["deliveryState"],
             a["attempts"], a["lastError"], a["nextAttemptAt"], a["apiKey"]) for a in alerts] == [
        ("POOL_THRESHOLD", 100, 1010, 1000, "DELIVERED", 1, None, None, None),
        ("POOL_THRESHOLD", 80, 800, 1000, "DELIVERED", 1, None, None, None)]
    assert [a["id"] for a in alerts] == [payloads[1]["id"], payloads[0]["id"]]
    assert all(a["deliveredAt"] is not None and a["lastAttemptAt"] is not None
               for a in alerts)
    assert datetime.fromisoformat(alerts[0]["periodStart"]) == PERIOD[0]
    assert datetime.fromisoformat(alerts[0]["periodEnd"]) == PERIOD[1]


async def test_a_key_budget_crossing_records_a_key_budget_alert(client):
    await setup(client, granted=10**9, thresholds="[50, 100]")
    await set_budget("k1", 400)  # k2 has no budget
    batches = [
        [ev(1, 150, at(2)), ev(2, 900, at(2), key="k2")],     # k1 150
        [ev(3, 60, at(3)), ev(4, 5000, at(3), key="k2")],     # k1 210: 50%
        [ev(5, 189, at(4))],                                  # k1 399
        [ev(6, 1, at(5))],                                    # k1 400: 100%
    ]
    expected = expected_alerts(batches, granted=10**9, thresholds=[50, 100],
                               budgets={"k1": 400})
    assert [(a["key"], a["threshold"], a["used"]) for a in expected] == [
        ("k1", 50, 210), ("k1", 100, 400)]
    for batch in batches:
        await ingest(client, batch)
    with webhook_receiver() as receiver:
        delivery = AlertDelivery(config(receiver))
        try:
            requests = await deliver_all(delivery, receiver, 2)
        finally:
            await delivery.aclose()
    payloads = sorted((verified(r) for r in requests), key=lambda p: p["threshold"])
    assert without_ids(payloads) == expected
    alerts = (await listed(client))["data"]["account"]["alerts"]
    assert [(a["type"], a["threshold"], a["used"], a["limit"], a["apiKey"]) for a in alerts] == [
        ("KEY_BUDGET_THRESHOLD", 100, 400, 400, {"id": gid("ApiKey", "k1"), "name": "Key k1"}),
        ("KEY_BUDGET_THRESHOLD", 50, 210, 400, {"id": gid("ApiKey", "k1"), "name": "Key k1"})]


async def test_events_outside_the_current_period_and_resends_do_not_count(client):
    await setup(client, granted=100)
    earlier = PERIOD[0] - timedelta(microseconds=1)  # the last instant of the period before
    batches = [
        [ev(1, 79, at(2))],                                      # 79%
        [ev(2, 10_000, earlier), ev(3, 10_000, at(1) - timedelta(days=40))],  # earlier periods
        [ev(4, 10_000, PERIOD[1])],                              # the next period: not current
        [ev(1, 79, at(2))],                                      # a resend of e1
    ]
    for batch in batches:
        answer = await ingest(client, batch)
        assert answer["rejected"] == []
    assert expected_alerts(batches, granted=100, thresholds=[80, 100]) == []
    assert await stored_alerts() == []
    # One more credit in the period reaches 80% exactly, with the total the test counts.
    batches.append([ev(5, 1, PERIOD[0])])  # the period's first instant counts
    await ingest(client, batches[-1])
    expected = expected_alerts(batches, granted=100, thresholds=[80, 100])
    assert [(a["threshold"], a["used"]) for a in expected] == [(80, 80)]
    assert [(a["kind"], a["threshold"], a["used"]) for a in await stored_alerts()] == [
        ("pool.threshold", 80, 80)]


async def test_parallel_ingestion_crossing_a_threshold_records_it_once(client):
    """Eight requests at once, each of which would cross 50% on its own after the first
    is stored: exactly one alert per threshold, whatever the interleaving."""
    await setup(client, granted=1000, thresholds="[50, 90]")
    await ingest(client, [ev("base", 450, at(2))])
    batches = [[ev(f"p{i}-{j}", 10, at(3, j)) for j in range(6)] for i in range(8)]

    async def post(batch: list[dict[str, Any]]) -> dict[str, Any]:
        response = await client.post("/v1/usage-events", json=batch, headers=SERVICE)
        assert response.status_code == 200, response.text
        return response.json()

    answers = await asyncio.gather(*(post(b) for b in batches))
    assert sum(a["accepted"] for a in answers) == 48
    stored = await stored_alerts()
    total = 450 + 8 * 60  # 930
    assert [(a["kind"], a["threshold"]) for a in stored] == [("pool.threshold", 50),
                                                             ("pool.threshold", 90)]
    # Each was recorded by a batch that took the total past it: what that batch saw.
    for a in stored:
        assert a["used"] * 100 >= a["threshold"] * 1000 and a["used"] <= total
        assert (a["used"] - 450) % 60 == 0
    _, rows = await connection().execute_query(
        "SELECT credits FROM usage_period_total WHERE api_key_id = 0")
    assert [int(r[0]) for r in rows] == [total]


async def test_a_total_created_late_counts_the_events_already_stored(client):
    """A key given a budget mid-period, and a period moved forward after its events
    arrived: the first counted batch starts the total from the stored events."""
    await setup(client, granted=10**9, thresholds="[100]")
    await ingest(client, [ev(1, 70, at(2)), ev(2, 20, at(3), key="k2")])
    await set_budget("k1", 100)
    await ingest(client, [ev(3, 30, at(4))])  # k1: 70 + 30 = 100
    feb = [ev(4, 500, datetime(2026, 2, 3, tzinfo=UTC)),
           ev(5, 400, datetime(2026, 2, 4, tzinfo=UTC), key="k2")]
    await ingest(client, feb)  # not the current period (yet)
    await put(client, "/v1/accounts/acme", {
        "name": "Account acme", "plan": "PRO", "timeZone": "UTC", "creditsGranted": 1000,
        "periodStart": "2026-02-01T00:00:00Z", "periodEnd": "2026-03-01T00:00:00Z",
        "alertThresholds": [100]})  # a PUT replaces: thresholds left out would be reset
    await ingest(client, [ev(6, 100, datetime(2026, 2, 5, tzinfo=UTC), key="k2")])
    stored = await stored_alerts()
    assert [(a["kind"], a["threshold"], a["used"], a["credit_limit"]) for a in stored] == [
        ("key_budget.threshold", 100, 100, 100),
        ("pool.threshold", 100, 500 + 400 + 100, 1000)]


# --- delivery -------------------------------------------------------------------------


async def test_a_failing_receiver_gets_retries_with_backoff_then_success(client):
    await setup(client, granted=100, thresholds="[100]")
    await ingest(client, [ev(1, 100, at(2))])
    clock = Clock()
    with webhook_receiver(statuses=[500, 500]) as receiver:
        delivery = AlertDelivery(config(receiver, retry_base_s=30, retry_max_s=300),
                                 clock=clock)
        try:
            assert await delivery.deliver_due() == 1  # 500
            alerts = (await listed(client))["data"]["account"]["alerts"]
            assert [(a["deliveryState"], a["attempts"], a["lastError"]) for a in alerts] == [
                ("FAILING", 1, "HTTP 500: receiver says no")]
            wait = datetime.fromisoformat(alerts[0]["nextAttemptAt"]).timestamp() - clock.now
            assert 15 - 1e-3 <= wait <= 30 + 1e-3  # first retry: [base/2, base]
            assert await delivery.deliver_due() == 0  # not due yet
            clock.now += wait + 0.001
            assert await delivery.deliver_due() == 1  # 500 again
            alerts = (await listed(client))["data"]["account"]["alerts"]
            wait = datetime.fromisoformat(alerts[0]["nextAttemptAt"]).timestamp() - clock.now
            assert (alerts[0]["attempts"], alerts[0]["deliveryState"]) == (2, "FAILING")
            assert 30 - 1e-3 <= wait <= 60 + 1e-3  # doubled
            clock.now += wait + 0.001
            assert await delivery.deliver_due() == 1  # 200
            assert await delivery.deliver_due() == 0
        finally:
            await delivery.aclose()
    payloads = [verified(r) for r in receiver.requests]
    assert len(payloads) == 3 and len({r.body for r in receiver.requests}) == 1
    assert without_ids(payloads[:1]) == expected_alerts([[ev(1, 100, at(2))]], granted=100,
                                                        thresholds=[100])
    alerts = (await listed(client))["data"]["account"]["alerts"]
    assert [(a["deliveryState"], a["attempts"], a["lastError"], a["nextAttemptAt"])
            for a in alerts] == [("DELIVERED", 3, None, None)]


async def test_the_worker_retries_on_its_own_until_delivered(client):
    """The background loop (as the server runs it), woken by ingestion: two 500s, then
    200, with small backoff settings."""
    await setup(client, granted=10, thresholds="[100]")
    with webhook_receiver(statuses=[500, 500]) as receiver:
        delivery = AlertDelivery(config(receiver, poll_s=30))  # only the nudge wakes it
        with listening(delivery.wake.set):
            task = asyncio.create_task(delivery.run())
            try:
                await ingest(client, [ev(1, 10, at(2))])
                await asyncio.to_thread(receiver.wait_requests, 3)
                deadline = time.monotonic() + DEADLINE_S
                while (await stored_alerts())[0]["delivered_at_us"] is None:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.02)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await delivery.aclose()
    assert len({verified(r)["id"] for r in receiver.requests}) == 1
    stored = await stored_alerts()
    assert [(a["attempts"], a["last_error"]) for a in stored] == [(3, None)]


async def test_a_hung_receiver_never_blocks_ingestion(client):
    await setup(client, granted=100, thresholds="[50, 100]")
    with webhook_receiver() as receiver:
        receiver.hold.set()
        delivery = AlertDelivery(config(receiver, timeout_s=30))
        with listening(delivery.wake.set):
            task = asyncio.create_task(delivery.run())
            try:
                await ingest(client, [ev(1, 50, at(2))])
                await asyncio.to_thread(receiver.wait_for, lambda r: r.holding == 1,
                                        "a held request")
                # The receiver holds the 50% alert: ingestion goes on, and records 100%.
                started = time.monotonic()
                answer = await ingest(client, [ev(2, 50, at(3))])
                assert answer["accepted"] == 1 and time.monotonic() - started < 10
                assert receiver.holding == 1  # still unanswered
                assert [a["threshold"] for a in await stored_alerts()] == [50, 100]
            finally:
                receiver.release.set()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await delivery.aclose()


async def test_a_receiver_that_does_not_answer_in_time_is_a_failed_attempt(client):
    await setup(client, granted=100, thresholds="[100]")
    await ingest(client, [ev(1, 100, at(2))])
    with webhook_receiver() as receiver:
        receiver.hold.set()
        delivery = AlertDelivery(config(receiver, timeout_s=0.5, retry_base_s=3600))
        try:
            assert await delivery.deliver_due() == 1
        finally:
            receiver.release.set()
            await delivery.aclose()
    stored = await stored_alerts()
    assert [(a["attempts"], a["delivered_at_us"], a["last_error"]) for a in stored] == [
        (1, None, "no answer within 0.5 s")]


async def test_an_unreachable_receiver_is_a_failed_attempt(client):
    from support.ports import free_port

    await setup(client, granted=100, thresholds="[100]")
    await ingest(client, [ev(1, 100, at(2))])
    delivery = AlertDelivery(config(f"http://127.0.0.1:{free_port()}/nobody"))
    try:
        assert await delivery.deliver_due() == 1
    finally:
        await delivery.aclose()
    [stored] = await stored_alerts()
    assert stored["attempts"] == 1 and stored["delivered_at_us"] is None
    assert stored["last_error"].startswith("ConnectError")


async def test_two_workers_never_send_the_same_alert(client, monkeypatch):
    """Two delivery workers (as two server processes run them) claim at once: every
    alert is claimed by one of them, attempted once and sent exactly once (PostgreSQL:
    FOR UPDATE SKIP LOCKED; Citus: the same, per account; SQLite: one writer).

    A round in which neither worker claims anything is not a failure by itself: the
    test waits for all 40 within the deadline, and then requires one attempt per alert
    with no error, so a failed attempt (retried later) fails it with its error."""
    monkeypatch.setattr(delivery_module, "BATCH", 7)
    await setup(client, granted=1000, thresholds=json.dumps(list(range(1, 41))))
    await ingest(client, [ev(1, 400, at(2))])  # reaches 1% ... 40%: 40 alerts
    with webhook_receiver() as receiver:
        # A generous timeout: a slow answer on a loaded machine must not count as a
        # failed attempt (which would rightly send that alert again).
        workers = [AlertDelivery(config(receiver, timeout_s=DEADLINE_S)) for _ in range(2)]
        rounds: list[list[int]] = []
        deadline = time.monotonic() + DEADLINE_S
        try:
            while len(receiver.requests) < 40:
                assert time.monotonic() < deadline, (rounds, await stored_alerts())
                rounds.append(list(await asyncio.gather(*(w.deliver_due()
                                                          for w in workers))))
            assert await asyncio.gather(*(w.deliver_due() for w in workers)) == [0, 0]
        finally:
            for w in workers:
                await w.aclose()
    assert sum(map(sum, rounds)) == 40, rounds  # no alert claimed twice
    ids = [verified(r)["id"] for r in receiver.requests]
    assert len(ids) == 40 and len(set(ids)) == 40
    assert sorted(verified(r)["threshold"] for r in receiver.requests) == list(range(1, 41))
    stored = await stored_alerts()
    assert [(a["attempts"], a["last_error"]) for a in stored] == [(1, None)] * 40, stored
    assert all(a["delivered_at_us"] is not None for a in stored)


# --- the GraphQL field ------------------------------------------------------------------


async def test_alerts_newest_first_limited_by_first_and_guarded(client):
    await setup(client, granted=100, thresholds="[10, 20, 30]")
    for i in range(3):
        await ingest(client, [ev(i, 10, at(2 + i))])
    answer = await listed(client, first=2)
    assert [a["threshold"] for a in answer["data"]["account"]["alerts"]] == [30, 20]
    assert [a["threshold"] for a in (await listed(client, first=None))["data"]["account"][
        "alerts"]] == [30, 20, 10]
    assert (await listed(client, first=0))["data"]["account"]["alerts"] == []
    answer = await listed(client, user="member")
    assert answer["data"]["account"]["alerts"] is None
    assert answer["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    for first in (-1, 101):
        answer = await listed(client, first=first)
        assert answer["data"] is None
        assert answer["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        assert "first" in answer["errors"][0]["message"]


async def test_free_plan_admins_are_told_to_upgrade(client):
    await setup(client, plan="FREE")
    answer = await listed(client)
    assert answer["data"]["account"]["alerts"] is None
    assert answer["errors"][0]["extensions"]["code"] == "PLAN_UPGRADE_REQUIRED"


@pytest.mark.parametrize("text", ["[80, 100", "not json", "[1e3]", "[-5]", "[123456]",
                                  "[\uff18\uff10]", "[\u0668\u0660]"])  # other digits
async def test_a_damaged_thresholds_setting_falls_back_to_the_default(client, text):
    """Ingestion never fails on the setting, and alerts at 80 and 100 percent."""
    await setup(client, granted=100, thresholds=text)
    answer = await ingest(client, [ev(1, 85, at(2))])
    assert answer["accepted"] == 1
    assert [a["threshold"] for a in await stored_alerts()] == [80]


async def test_a_batch_naming_thousands_of_subjects_records_them_all(client):
    """8,000 events of 4,000 accounts, each with a budgeted key: 8,000 running totals in
    one batch (40,000 values: more than a default SQLite build binds in one statement), 2
    alerts each."""
    from gql_usage.storage.models import Plan, Role, User

    if await distributed(connection()):
        pytest.skip("the bind limits this test is about are not Citus's: there a batch is "
                    "1-5 router statements per account (docs/citus.md), and 4,000 accounts in "
                    "one batch are ~16,000 statements, longer than the request timeout")

    n = 4000
    await Account.bulk_create([Account(
        external_id=f"a{i}", name=f"A{i}", plan=Plan.PRO, credits_granted=2,
        period_start=PERIOD[0], period_end=PERIOD[1]) for i in range(n)])
    ids = dict(await Account.all().values_list("external_id", "id"))
    await User.bulk_create([User(account_id=ids[f"a{i}"], external_id="admin", name="A",
                                 email="a@b.c", role=Role.ADMIN) for i in range(n)])
    await ApiKey.bulk_create([ApiKey(account_id=ids[f"a{i}"], external_id="k1", name="K",
                                     prefix="k", created_at=PERIOD[0], credit_budget=1)
                              for i in range(n)])
    batch = [ev(f"{i}-{j}", 1, at(2, j), account=f"a{i}") for i in range(n) for j in range(2)]
    answer = await ingest(client, batch)
    assert (answer["accepted"], answer["rejected"]) == (2 * n, [])
    _, rows = await connection().execute_query(
        "SELECT kind, threshold, used, credit_limit, COUNT(*) FROM usage_alert"
        " GROUP BY kind, threshold, used, credit_limit ORDER BY kind, threshold")
    # Every account: 2 of 2 credits (80 % and 100 %), its key 2 of a budget of 1.
    assert [tuple(r) for r in rows] == [
        ("key_budget.threshold", 80, 2, 1, n), ("key_budget.threshold", 100, 2, 1, n),
        ("pool.threshold", 80, 2, 2, n), ("pool.threshold", 100, 2, 2, n)]


async def test_a_budget_removed_and_set_again_counts_every_event_of_the_period(client):
    """Budget set, 50 counted; removed (the key's events are no longer added to its
    total); 40 used; set again: its total is made again from the events (90), so the next
    batch reaching 100 alerts at once, as ``ApiKey.budget.used`` says."""
    await setup(client, granted=10**9, thresholds="[100]")
    key = {"name": "Key k1", "prefix": "pk_k1", "createdBy": "admin",
           "createdAt": "2025-06-01T00:00:00Z", "revokedAt": None}
    await put(client, "/v1/accounts/acme/api-keys/k1", {**key, "creditBudget": 100})
    await ingest(client, [ev(1, 50, at(2))])
    await put(client, "/v1/accounts/acme/api-keys/k1", {**key, "creditBudget": None})
    await ingest(client, [ev(2, 40, at(3))])
    await put(client, "/v1/accounts/acme/api-keys/k1", {**key, "creditBudget": 100})
    assert await stored_alerts() == []
    await ingest(client, [ev(3, 10, at(4))])  # 50 + 40 + 10 = 100
    assert [(a["kind"], a["threshold"], a["used"]) for a in await stored_alerts()] == [
        ("key_budget.threshold", 100, 100)]


async def test_a_period_left_and_taken_again_counts_every_event_of_it(client):
    """January, 500 counted; the period moved to February (January's total is dropped)
    and 400 more January events stored meanwhile; back to January: its total is made again
    from the events (900), so the next 100 reach the pool's 100 % at once."""
    await setup(client, granted=1000, thresholds="[100]")

    async def period(start: str, end: str) -> None:
        await put(client, "/v1/accounts/acme", {
            "name": "Account acme", "plan": "PRO", "timeZone": "UTC", "creditsGranted": 1000,
            "periodStart": start, "periodEnd": end, "alertThresholds": [100]})

    await ingest(client, [ev(1, 500, at(2))])
    await period("2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z")
    await ingest(client, [ev(2, 400, at(3))])  # January: not the current period now
    await period(PERIOD[0].isoformat(), PERIOD[1].isoformat())
    assert await stored_alerts() == []
    await ingest(client, [ev(3, 100, at(4))])
    assert [(a["kind"], a["threshold"], a["used"]) for a in await stored_alerts()] == [
        ("pool.threshold", 100, 1000)]
