"""``alertThresholds`` on ``PUT /v1/accounts/{accountId}`` (SPEC 6.3), on both databases:
percents 1..1000, distinct, at most 10, default [80, 100], stored sorted and read back with
``Account.alert_threshold_percents``; anything else is a coded 422 naming the field, and
leaves what was stored as it was."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from support.helpers import SERVICE

from gql_usage.storage.models import Account

ACCOUNT = {"name": "Acme", "plan": "PRO", "timeZone": "UTC", "creditsGranted": 10,
           "periodStart": "2026-01-01T00:00:00Z", "periodEnd": "2026-02-01T00:00:00Z"}


async def put_account(client: httpx.AsyncClient, **fields: Any) -> httpx.Response:
    return await client.put("/v1/accounts/acme", headers=SERVICE,
                            content=json.dumps({**ACCOUNT, **fields}))


async def stored() -> tuple[int, ...]:
    return (await Account.get(external_id="acme")).alert_threshold_percents


async def test_default_is_80_and_100(client: httpx.AsyncClient) -> None:
    assert (await put_account(client)).status_code == 201
    assert await stored() == (80, 100)


@pytest.mark.parametrize(("sent", "kept"), [
    ([100, 50, 1000, 1], (1, 50, 100, 1000)),
    ([75], (75,)),
    ([], ()),  # no alerts
    (list(range(10, 101, 10)), tuple(range(10, 101, 10))),  # ten
    ([100, 80], (80, 100)),
])
async def test_valid_thresholds_are_stored_sorted(client: httpx.AsyncClient, sent: list[int],
                                                  kept: tuple[int, ...]) -> None:
    assert (await put_account(client, alertThresholds=sent)).status_code == 201
    assert await stored() == kept
    text = (await Account.get(external_id="acme")).alert_thresholds
    assert json.loads(text) == list(kept)


@pytest.mark.parametrize(("value", "says"), [
    ([0], "greater than or equal to 1"),
    ([-80], "greater than or equal to 1"),
    ([1001], "less than or equal to 1000"),
    ([2**63], "less than or equal to 1000"),
    ([80, 80], "80 is listed twice"),
    ([100, 80, 100], "100 is listed twice"),
    (list(range(1, 12)), "at most 10 items"),
    ([80.5], "valid integer"),
    ([80.0], "valid integer"),
    (["80"], "valid integer"),
    ([True], "valid integer"),
    ([None], "valid integer"),
    ([[80]], "valid integer"),
    (80, "valid list"),
    ("80,100", "valid list"),
    ({"80": True}, "valid list"),
    (None, "valid list"),
])
async def test_wrong_thresholds_are_a_coded_422_naming_the_field(
        client: httpx.AsyncClient, value: Any, says: str) -> None:
    assert (await put_account(client, alertThresholds=[50])).status_code == 201
    response = await put_account(client, alertThresholds=value)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "BAD_USER_INPUT" and body["field"] == "alertThresholds", body
    assert body["error"].startswith("alertThresholds") and says in body["error"], body
    assert await stored() == (50,)  # refused: unchanged


async def test_a_put_without_them_restores_the_default(client: httpx.AsyncClient) -> None:
    assert (await put_account(client, alertThresholds=[10, 20])).status_code == 201
    assert (await put_account(client, name="Acme 2")).status_code == 200
    assert await stored() == (80, 100)


async def test_a_huge_list_is_refused_quickly(client: httpx.AsyncClient) -> None:
    response = await put_account(client, alertThresholds=list(range(1, 200_001)))
    assert response.status_code == 422
    assert response.json()["field"] == "alertThresholds"
