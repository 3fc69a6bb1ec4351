"""The alert outbox: stored alerts, claimed for delivery, and the outcome of each attempt.

An alert is stored by ingestion (``gql_usage.alerts.record``) before anything is sent, so
a crash loses none. A delivery worker *claims* due alerts: one statement moves their
``next_attempt_at_us`` past the end of the attempt (a lease), so that no other worker
takes them while they are being sent; on PostgreSQL the rows are picked with
``FOR UPDATE SKIP LOCKED``, so several server processes claiming at once never get the
same alert (SQLite: the claim is one write transaction). In distributed mode (Citus,
docs/citus.md), where a row lock cannot span shards, the accounts with due alerts are
read first, then each account's alerts are claimed by the same statement confined to
that account (one shard each). The HTTP request is made
outside any transaction (no connection is held while a receiver is slow), then the
outcome is written. A worker that dies mid-attempt leaves the alert to be claimed again
when its lease ends: delivery is at least once, and receivers deduplicate by ``id``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from tortoise.backends.base.client import BaseDBAsyncClient

from gql_usage.calendar import from_us
from gql_usage.storage.db import Sql, Value, connection, dialect, fetch_rows, read_connection
from gql_usage.storage.distribution import distributed

_SELECT = (
    "SELECT u.id, u.uid, u.kind, a.external_id, u.api_key_id, k.external_id, u.threshold,"
    " u.used, u.credit_limit, u.period_start_us, u.period_end_us, u.occurred_at_us,"
    " u.attempts, u.next_attempt_at_us, u.last_attempt_at_us, u.delivered_at_us,"
    " u.last_error, u.account_id FROM usage_alert u JOIN account a ON a.id = u.account_id"
    " LEFT JOIN api_key k ON k.account_id = u.account_id AND k.id = u.api_key_id"
    " AND u.api_key_id <> 0"
)
#: ``Account.alerts(first:)``: its default and largest value.
DEFAULT_FIRST = 20
MAX_FIRST = 100
#: The longest ``last_error`` kept.
MAX_ERROR_CHARS = 500


def _dt(us: int | None) -> datetime | None:
    return None if us is None else from_us(int(us))


@dataclass(frozen=True)
class StoredAlert:
    """One row of ``usage_alert``, with the account's and key's external ids."""

    pk: int
    id: str  # the public id (a UUID), the same in every attempt's payload
    type: str  # "pool.threshold" or "key_budget.threshold"
    account: str
    api_key_pk: int | None  # None: a pool alert
    key: str | None
    threshold: int
    used: int
    limit: int
    period_start_us: int
    period_end_us: int
    occurred_at_us: int
    attempts: int
    next_attempt_at_us: int
    last_attempt_at_us: int | None
    delivered_at_us: int | None
    last_error: str | None
    account_pk: int = 0  # the account's internal id (the distribution column on Citus)

    @classmethod
    def from_row(cls, row: Any) -> StoredAlert:
        (pk, uid, kind, account, key_pk, key, threshold, used, limit, start, end, occurred,
         attempts, next_at, last_at, delivered, error, account_pk) = row
        return cls(int(pk), str(uid), str(kind), str(account), int(key_pk) or None,
                   None if key is None else str(key), int(threshold), int(used), int(limit),
                   int(start), int(end), int(occurred), int(attempts), int(next_at),
                   None if last_at is None else int(last_at),
                   None if delivered is None else int(delivered),
                   None if error is None else str(error), int(account_pk))

    @property
    def occurred_at(self) -> datetime:
        return from_us(self.occurred_at_us)

    @property
    def period_start(self) -> datetime:
        return from_us(self.period_start_us)

    @property
    def period_end(self) -> datetime:
        return from_us(self.period_end_us)

    @property
    def delivered_at(self) -> datetime | None:
        return _dt(self.delivered_at_us)

    @property
    def next_attempt_at(self) -> datetime | None:
        """When delivery is tried next; None once delivered."""
        return None if self.delivered_at_us is not None else from_us(self.next_attempt_at_us)

    def payload(self) -> dict[str, Any]:
        """The webhook's JSON object (README, "Alerts and webhooks")."""
        return {"id": self.id, "type": self.type, "account": self.account, "key": self.key,
                "threshold": self.threshold, "used": self.used, "limit": self.limit,
                "occurredAt": self.occurred_at.isoformat(),
                "periodStart": self.period_start.isoformat(),
                "periodEnd": self.period_end.isoformat()}

    def body(self) -> bytes:
        """The request body: the payload as compact JSON, the same bytes every attempt."""
        return orjson.dumps(self.payload())


async def recent(account_id: int, first: int) -> list[StoredAlert]:
    """The account's ``first`` newest alerts (by when they were recorded), newest first."""
    conn = read_connection()
    q = Sql(dialect(conn)).add(_SELECT, " WHERE u.account_id = ", int(account_id),
                               " ORDER BY u.occurred_at_us DESC, u.id DESC LIMIT ", int(first))
    return [StoredAlert.from_row(r) for r in await fetch_rows(q, conn)]


async def claim(now_us: int, lease_us: int, limit: int) -> list[StoredAlert]:
    """Up to ``limit`` undelivered alerts due at ``now_us``, oldest due first, leased to
    the caller until ``now_us + lease_us``."""
    conn = connection()
    if dialect(conn) == "postgres" and await distributed(conn):
        return await _claim_by_account(conn, now_us, lease_us, limit)
    ids = await _claim_ids(conn, now_us, lease_us, limit, None)
    if not ids:
        return []
    q = Sql(dialect(conn)).add(_SELECT, " WHERE ").in_list("u.id", ids).add(" ORDER BY u.id")
    return [StoredAlert.from_row(r) for r in await fetch_rows(q, conn)]


async def _claim_ids(conn: BaseDBAsyncClient, now_us: int, lease_us: int, limit: int,
                     account_id: int | None) -> list[int]:
    """The claiming statement (of one account's alerts alone with ``account_id``)."""
    d = dialect(conn)
    q = Sql(d).add("UPDATE usage_alert SET next_attempt_at_us = ", now_us + lease_us,
                   ", last_attempt_at_us = ", now_us, " WHERE ")
    if account_id is not None:
        q.add("account_id = ", int(account_id), " AND ")
    q.add("id IN (SELECT id FROM usage_alert WHERE delivered_at_us IS NULL"
          " AND next_attempt_at_us <= ", now_us)
    if account_id is not None:
        q.add(" AND account_id = ", int(account_id))
    q.add(" ORDER BY next_attempt_at_us, id LIMIT ", int(limit))
    q.add(" FOR UPDATE SKIP LOCKED) RETURNING id" if d == "postgres" else ") RETURNING id")
    # execute_query_dict: Tortoise's asyncpg ``execute_query`` drops the rows of an UPDATE.
    return [int(r["id"]) for r in await conn.execute_query_dict(q.text, q.params)]


async def _claim_by_account(conn: BaseDBAsyncClient, now_us: int, lease_us: int,
                            limit: int) -> list[StoredAlert]:
    """Distributed mode: the accounts whose alerts fell due first, then per account the
    claim and the read of what it claimed, each routed to the account's shard."""
    q = Sql("postgres").add(
        "SELECT account_id FROM usage_alert WHERE delivered_at_us IS NULL"
        " AND next_attempt_at_us <= ", now_us,
        " GROUP BY account_id ORDER BY min(next_attempt_at_us), account_id LIMIT ", int(limit))
    claimed: list[StoredAlert] = []
    for (account_id,) in await fetch_rows(q, conn):
        if len(claimed) >= limit:
            break
        ids = await _claim_ids(conn, now_us, lease_us, limit - len(claimed), int(account_id))
        if ids:
            read = Sql("postgres").add(_SELECT, " WHERE u.account_id = ", int(account_id),
                                       " AND ").in_list("u.id", ids).add(" ORDER BY u.id")
            claimed += [StoredAlert.from_row(r) for r in await fetch_rows(read, conn)]
    return claimed


async def next_due() -> int | None:
    """When the next undelivered alert falls due (µs; a leased one when its lease ends)."""
    conn = connection()
    q = Sql(dialect(conn)).add("SELECT min(next_attempt_at_us) FROM usage_alert"
                               " WHERE delivered_at_us IS NULL")
    value = (await fetch_rows(q, conn))[0][0]
    return None if value is None else int(value)


async def delivered(alert: StoredAlert, at_us: int,
                    conn: BaseDBAsyncClient | None = None) -> None:
    """The receiver answered 2xx."""
    conn = conn or connection()
    q = Sql(dialect(conn)).add("UPDATE usage_alert SET delivered_at_us = ", at_us,
                               ", attempts = attempts + 1, last_error = NULL"
                               " WHERE account_id = ", alert.account_pk, " AND id = ",
                               alert.pk)
    await conn.execute_query(q.text, q.params)


async def failed(alert: StoredAlert, error: str, next_attempt_at_us: int,
                 conn: BaseDBAsyncClient | None = None) -> None:
    """The attempt failed with ``error``; try again at ``next_attempt_at_us`` (unless
    another attempt has delivered it meanwhile)."""
    conn = conn or connection()
    q = Sql(dialect(conn)).add(
        "UPDATE usage_alert SET attempts = attempts + 1, last_error = ",
        _bounded(error), ", next_attempt_at_us = ", next_attempt_at_us,
        " WHERE account_id = ", alert.account_pk, " AND id = ", alert.pk,
        " AND delivered_at_us IS NULL")
    await conn.execute_query(q.text, q.params)


def _bounded(error: str) -> Value:
    text = error if len(error) <= MAX_ERROR_CHARS else error[:MAX_ERROR_CHARS - 1] + "…"
    return Value(text)
