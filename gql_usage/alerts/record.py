"""Recording alerts at ingestion, in the transaction that stores the events.

Running totals (``usage_period_total``) hold the credits of each account's current billing
period, for the whole pool (``api_key_id`` 0) and for each key with a budget. A batch adds
the credits of the events it stored for the first time (a resent event was not inserted,
so it never counts twice) whose ``occurredAt`` lies in the account's current period
``[period_start, period_end)``; an event of another period counts nowhere. The upsert
returns the new total; every threshold it has reached gets an alert, inserted or ignored
against the UNIQUE key (account, key or 0, threshold, period start): one alert per
subject, threshold and period, whichever of two racing batches gets there first.

Race safety: the upsert takes the total's row lock, so two batches of one account add
their credits one after the other and each sees the other's (PostgreSQL's
``ON CONFLICT DO UPDATE`` reads the latest committed row); SQLite has one writer.

A total is created by the first batch that counts credits for its subject and period,
from the credits of the events already stored in that period (the events of a period
that started before its total existed: a key given a budget mid-period, a period
changed by ``PUT /v1/accounts``), so that a total always equals its stored events. That
scan runs once per total; afterwards each batch costs a few index probes. A total that
stopped counting is dropped (``forget_stale_totals``): a key's when its budget is
removed, an account's other periods' when its period changes; given a budget again, or
back in that period, its total is made again from the events.

Constant cost per batch: on PostgreSQL the recording is part of the one ingestion
statement (``POSTGRES_ALERT_CTES``); on SQLite it is at most four statements in the
ingestion's transaction (``record_sqlite``); on Citus at most two router statements per
account (``gql_usage.ingest.store_citus``). SQLite and Citus share ``alert_candidates``
and ``insert_alerts_sql``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from gql_usage.alerts.thresholds import (
    DEFAULT_TEXT,
    NUMBER_PATTERN,
    THRESHOLDS_PATTERN,
    parse_thresholds,
    reached_thresholds,
)
from gql_usage.calendar import US, to_us
from gql_usage.ingest.rows import Row
from gql_usage.storage.db import Sql, fetch_rows
from gql_usage.storage.db import dialect as dialect_of

#: Statements ``record_sqlite`` sends for a batch, at most, whatever its size (1 when no
#: new event has credits in its account's current period; none when nothing is new).
SQLITE_ALERT_STATEMENTS = 4
POOL = 0
"""``api_key_id`` of the account's pool total and pool alerts."""
_SAFE_TEXT = re.compile(r"[0-9a-z._-]{1,40}")
POOL_THRESHOLD = "pool.threshold"
KEY_BUDGET_THRESHOLD = "key_budget.threshold"

_TOTAL_KEY = "account_id, api_key_id, period_start_us, period_end_us"
_ALERT_COLUMNS = ("uid, account_id, api_key_id, kind, threshold, used, credit_limit, "
                  "period_start_us, period_end_us, occurred_at_us, next_attempt_at_us")
#: The credits already stored for a total ``d`` (``{account}``: the account, as the
#: statement can name it).
_BASELINE = ("SELECT coalesce(sum(e.credits), 0) FROM usage_event e"
             " WHERE e.account_id = {account} AND e.occurred_at_us >= d.ps"
             " AND e.occurred_at_us < d.pe AND (d.api_key_id = 0 OR e.api_key_id = d.api_key_id)")
_EXISTS = ("SELECT 1 FROM usage_period_total x WHERE x.account_id = {account}"
           " AND x.api_key_id = d.api_key_id AND x.period_start_us = d.ps"
           " AND x.period_end_us = d.pe")
_UPSERT_TAIL = (f" ON CONFLICT ({_TOTAL_KEY}) DO UPDATE SET"
                " credits = usage_period_total.credits + excluded.added, added = excluded.added"
                f" RETURNING {_TOTAL_KEY}, credits")

#: The accounts the PostgreSQL ingestion statement is about (``$10``, comma-separated):
#: every table it reads or writes is also filtered by them.
STATEMENT_ACCOUNTS = "ANY(string_to_array($10, ',')::int[])"

#: The CTEs that follow ``new`` (the inserted events, with ``RETURNING`` of ``account_id,
#: api_key_id, credits, occurred_at_us``) in the PostgreSQL ingestion statement; ``$10`` is
#: the statement's accounts, ``$9`` the receive time (µs), the alerts' ``occurredAt``.
#: ``alerts`` returns one row per alert recorded. The baseline sum leaves out this batch's
#: events, which ``added`` brings: on PostgreSQL each sub-statement sees the snapshot taken
#: before the statement, so it does not see them anyway, but Citus runs the ``new`` insert
#: as a step of its own before the rest, which then sees its rows (the first batch of a
#: period was counted twice there). The arithmetic of the thresholds is
#: ``thresholds.reached_thresholds``'s.
POSTGRES_ALERT_CTES = (
    " periods AS MATERIALIZED (SELECT a.id AS account_id,"
    f" (extract(epoch FROM a.period_start) * {US})::bigint AS ps,"
    f" (extract(epoch FROM a.period_end) * {US})::bigint AS pe"
    f" FROM account a WHERE a.id = {STATEMENT_ACCOUNTS}),"
    " counted AS (SELECT n.account_id, n.api_key_id, n.credits, p.ps, p.pe FROM new n"
    " JOIN periods p ON p.account_id = n.account_id"
    " WHERE n.occurred_at_us >= p.ps AND n.occurred_at_us < p.pe AND n.credits > 0),"
    " added AS (SELECT account_id, 0 AS api_key_id, ps, pe, sum(credits)::bigint AS credits"
    " FROM counted GROUP BY account_id, ps, pe"
    " UNION ALL SELECT c.account_id, c.api_key_id, c.ps, c.pe, sum(c.credits)::bigint"
    " FROM counted c JOIN api_key k ON k.account_id = c.account_id AND k.id = c.api_key_id"
    f" AND k.account_id = {STATEMENT_ACCOUNTS}"
    " WHERE k.credit_budget IS NOT NULL GROUP BY c.account_id, c.api_key_id, c.ps, c.pe),"
    f" totals AS (INSERT INTO usage_period_total ({_TOTAL_KEY}, credits, added)"
    " SELECT d.account_id, d.api_key_id, d.ps, d.pe, d.credits"
    f" + CASE WHEN EXISTS ({_EXISTS.format(account='d.account_id')}"
    f" AND x.account_id = {STATEMENT_ACCOUNTS}) THEN 0"
    f" ELSE ({_BASELINE.format(account='d.account_id')}"
    f" AND e.account_id = {STATEMENT_ACCOUNTS}"
    " AND e.event_id NOT IN (SELECT event_id FROM new)) END, d.credits"
    f" FROM added d ORDER BY 1, 2, 3, 4{_UPSERT_TAIL}),"
    f" alerts AS (INSERT INTO usage_alert ({_ALERT_COLUMNS})"
    " SELECT gen_random_uuid()::text, t.account_id, t.api_key_id,"
    f" CASE WHEN t.api_key_id = 0 THEN '{POOL_THRESHOLD}' ELSE '{KEY_BUDGET_THRESHOLD}' END,"
    " th.pct, t.credits, l.lim, t.period_start_us, t.period_end_us, $9, $9"
    " FROM totals t JOIN account a ON a.id = t.account_id"
    " LEFT JOIN api_key k ON k.account_id = t.account_id AND k.id = t.api_key_id"
    f" AND t.api_key_id <> 0 AND k.account_id = {STATEMENT_ACCOUNTS}"
    " CROSS JOIN LATERAL (SELECT CASE WHEN t.api_key_id = 0 THEN a.credits_granted"
    " ELSE k.credit_budget END AS lim) l"
    " CROSS JOIN LATERAL (SELECT DISTINCT m[1]::int AS pct FROM regexp_matches("
    f"CASE WHEN a.alert_thresholds ~ '{THRESHOLDS_PATTERN}' THEN a.alert_thresholds"
    f" ELSE '{DEFAULT_TEXT}' END, '{NUMBER_PATTERN}', 'g') AS m) th"
    " WHERE l.lim > 0 AND th.pct > 0"
    " AND t.credits::numeric * 100 >= l.lim::numeric * th.pct"
    " ORDER BY 2, 3, 5"
    " ON CONFLICT ON CONSTRAINT usage_alert_once DO NOTHING RETURNING 1)"
)


async def record_sqlite(conn: BaseDBAsyncClient, new: Sequence[Row], now_us: int) -> int:
    """Add the credits of ``new`` (events just inserted, in ``conn``'s transaction) to the
    running totals and record the alerts they reach; returns how many were recorded."""
    accounts = sorted({r.account_id for r in new})
    if not accounts:
        return 0
    q = Sql("sqlite").add("SELECT id, period_start, period_end, credits_granted, "
                          "alert_thresholds FROM account WHERE ")
    settings: dict[int, tuple[int, int, int, tuple[int, ...]]] = {}
    for account_id, start, end, granted, thresholds in await fetch_rows(
            q.in_list("id", accounts), conn):
        settings[int(account_id)] = (_us(start), _us(end), int(granted),
                                     parse_thresholds(thresholds))
    added: dict[tuple[int, int], int] = {}
    for r in new:
        period = settings.get(r.account_id)
        if period is None or r.credits <= 0 or not period[0] <= r.occurred_at_us < period[1]:
            continue
        added[(r.account_id, POOL)] = added.get((r.account_id, POOL), 0) + r.credits
        added[(r.account_id, r.api_key_id)] = added.get((r.account_id, r.api_key_id), 0) + r.credits
    if not added:
        return 0
    q = Sql("sqlite").add("SELECT id, credit_budget FROM api_key WHERE credit_budget IS NOT NULL"
                          " AND ")
    budgets = {int(k): int(b) for k, b in await fetch_rows(
        q.in_list("id", sorted({k for _, k in added if k != POOL})), conn)}
    subjects = sorted(s for s in added if s[1] == POOL or s[1] in budgets)
    # Integers (and below, our own uuids and kinds) are written into the text: a batch
    # of 10,000 events may name as many subjects, past the 32,766 bound parameters of
    # SQLite's default build.
    q = Sql("sqlite", inline_ints=True).add(
        "WITH d(account_id, api_key_id, ps, pe, credits) AS (VALUES ")
    for i, (account_id, key_id) in enumerate(subjects):
        start, end = settings[account_id][:2]
        q.add(", (" if i else "(", account_id, ", ", key_id, ", ", start, ", ", end, ", ",
              added[(account_id, key_id)], ")")
    # The batch's events are already inserted (same transaction): a new total is their
    # period's sum, this batch included.
    q.add(f") INSERT INTO usage_period_total ({_TOTAL_KEY}, credits, added)"
          " SELECT d.account_id, d.api_key_id, d.ps, d.pe,"
          f" CASE WHEN EXISTS ({_EXISTS.format(account='d.account_id')}) THEN d.credits"
          f" ELSE ({_BASELINE.format(account='d.account_id')}) END, d.credits"
          f" FROM d WHERE true{_UPSERT_TAIL}")
    totals = [(int(a), int(k), int(ps), int(pe), int(t))
              for a, k, ps, pe, t in await fetch_rows(q, conn)]
    limits = {account_id: (granted, thresholds)
              for account_id, (_, _, granted, thresholds) in settings.items()}
    candidates = alert_candidates(totals, limits, budgets, now_us)
    if not candidates:
        return 0
    q = insert_alerts_sql("sqlite", candidates)
    return len(await conn.execute_query_dict(q.text, q.params))


def alert_candidates(totals: Sequence[tuple[int, int, int, int, int]],
                     limits: dict[int, tuple[int, tuple[int, ...]]],
                     budgets: dict[int, int], now_us: int) -> list[tuple[Any, ...]]:
    """The alerts (``_ALERT_COLUMNS`` values, in lock order) that running totals
    (account, key or ``POOL``, period start, end, credits) have reached, given each
    account's (credits granted, thresholds) and the keys' budgets; each gets a new uid.
    ``thresholds.reached_thresholds``'s arithmetic, as ``POSTGRES_ALERT_CTES`` does in SQL."""
    candidates: list[tuple[Any, ...]] = []
    for account_id, key_id, start, end, total in totals:
        granted, thresholds = limits[account_id]
        limit = granted if key_id == POOL else budgets[key_id]
        kind = POOL_THRESHOLD if key_id == POOL else KEY_BUDGET_THRESHOLD
        for t in reached_thresholds(total, limit, thresholds):
            candidates.append((str(uuid.uuid4()), account_id, key_id, kind, t, total, limit,
                               start, end, now_us, now_us))
    return sorted(candidates, key=lambda c: (c[1], c[2], c[4]))


def insert_alerts_sql(dialect_name: str, candidates: Sequence[tuple[Any, ...]]) -> Sql:
    """One multi-row ``INSERT`` of ``candidates`` (``alert_candidates``), each ignored if
    its (account, key, threshold, period) has an alert already; returns a row per alert
    recorded. Every value is written into the text (our own integers, uuids and kinds):
    no bound parameter, whatever the count."""
    q = Sql(dialect_name, inline_ints=True).add(
        f"INSERT INTO usage_alert ({_ALERT_COLUMNS}) VALUES ")
    for i, values in enumerate(candidates):
        q.add(", (" if i else "(")
        for j, v in enumerate(values):
            q.add(", " if j else "", v if isinstance(v, int) else _literal(v))
        q.add(")")
    q.add(" ON CONFLICT (account_id, api_key_id, threshold, period_start_us) DO NOTHING"
          " RETURNING id")
    return q


def _literal(text: str) -> str:
    """A SQL string literal of one of our own values (a uuid, an alert kind)."""
    if not _SAFE_TEXT.fullmatch(text):
        raise ValueError(f"not a uuid or alert kind: {text!r}")
    return f"'{text}'"


def _us(value: Any) -> int:
    """A ``DatetimeField`` read with raw SQL (SQLite: ISO text; stored in UTC) in µs."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return to_us(value)


async def forget_stale_totals(conn: BaseDBAsyncClient, account_id: int,
                              period_start_us: int, period_end_us: int,
                              unbudgeted_key: int | None = None) -> None:
    """Drop the running totals that no longer count (called by the service API after it
    changes an account or a key): the account's totals of any other period than its
    current one, and, with ``unbudgeted_key``, that key's (its budget was removed; events
    are not added to it meanwhile, so a total kept would miss them once a budget is set
    again)."""
    q = Sql(dialect_of(conn)).add(
        "DELETE FROM usage_period_total WHERE account_id = ", account_id,
        " AND (period_start_us <> ", period_start_us, " OR period_end_us <> ", period_end_us)
    if unbudgeted_key is not None:
        q.add(" OR api_key_id = ", unbudgeted_key)
    q.add(")")
    await conn.execute_query(q.text, q.params)
