"""Events on Citus (distributed mode): each account's part of a batch as router statements.

``POSTGRES_STORE`` is one statement of CTEs; Citus runs each of its CTEs as a step of its
own through the coordinator (``INSERT ... SELECT`` from ``unnest`` is pulled there). Citus
routes a statement to one shard only if it is: an ``INSERT ... VALUES``; an ``INSERT ...
SELECT`` from a co-located table filtered to one account, into a table without a sequence
default (``usage_pending``, ``usage_period_total``: ``nextval`` is volatile, so
``usage_event`` and ``usage_alert`` take ``VALUES``); or a ``SELECT`` whose CTEs are
``SELECT`` / ``UPDATE`` / ``DELETE`` (never ``INSERT``). So an account's part of a batch
is these statements, the same steps as ``POSTGRES_STORE``'s CTEs, in the same order (the
lock order: events, keys, totals, alerts), each naming the account:

1. ``INSERT INTO usage_event ... VALUES ... ON CONFLICT DO NOTHING RETURNING id``;
   when it inserted nothing (a resend), that is all;
2. the pending copies: ``INSERT INTO usage_pending ... SELECT`` of the new events by id;
3. the keys: the new events' keys locked in id order, their ``last_used_at_us`` raised
   (never lowered) by an ``UPDATE`` CTE, and the account's period, pool and thresholds
   and the keys' budgets read, under those locks (a budget cannot change meanwhile);
4. when new events have credits in the period: the running totals' upsert (``INSERT ...
   SELECT`` of the new events; a total made now starts from its period's other events,
   as in ``POSTGRES_ALERT_CTES``), returning the totals;
5. when a total has reached a threshold: the alerts, ``alert_candidates`` (the SQLite
   path's arithmetic) as ``INSERT ... VALUES ... ON CONFLICT DO NOTHING``: once each.

At most five statements per account, one for a resend, all in the batch's one
transaction (``store_postgres.store``). Plain PostgreSQL keeps the one statement.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from gql_usage.alerts.record import (
    _BASELINE,
    _EXISTS,
    _TOTAL_KEY,
    _UPSERT_TAIL,
    alert_candidates,
    insert_alerts_sql,
)
from gql_usage.alerts.thresholds import parse_thresholds
from gql_usage.calendar import to_us
from gql_usage.ingest.rows import EVENT_COLUMNS, Row
from gql_usage.storage import cube
from gql_usage.storage.db import Sql, Value, raw_fetch
from gql_usage.storage.models import NO_USER

#: The new events (``$2``: their ids, comma-separated) of account ``$1``.
_NEW = "account_id = $1 AND id = ANY(string_to_array($2, ',')::bigint[])"
_PENDING_SELECT = ", ".join(f"coalesce(user_id, {NO_USER})" if c == "user_id" else c
                            for c in cube.PENDING_COLUMNS)
CITUS_PENDING = (f"INSERT INTO usage_pending ({', '.join(cube.PENDING_COLUMNS)})"
                 f" SELECT {_PENDING_SELECT} FROM usage_event WHERE {_NEW}")
#: The main query reads ``locked`` whole (every key locked, in id order) before the
#: ``UPDATE`` CTE runs, and the update's one-time filter counts it too.
CITUS_KEYS = (
    "WITH newest AS (SELECT api_key_id, max(occurred_at_us) AS t FROM usage_event"
    f" WHERE {_NEW} GROUP BY api_key_id),"
    " locked AS (SELECT id, credit_budget FROM api_key WHERE account_id = $1"
    " AND id IN (SELECT api_key_id FROM newest) ORDER BY id FOR NO KEY UPDATE),"
    " touched AS (UPDATE api_key SET last_used_at_us = GREATEST(api_key.last_used_at_us,"
    " newest.t) FROM newest WHERE api_key.account_id = $1 AND api_key.id = newest.api_key_id"
    " AND (api_key.last_used_at_us IS NULL OR api_key.last_used_at_us < newest.t)"
    " AND (SELECT count(*) FROM locked) > 0)"
    " SELECT a.period_start, a.period_end, a.credits_granted, a.alert_thresholds,"
    " l.id, l.credit_budget FROM account a LEFT JOIN locked l ON true WHERE a.id = $1"
)
#: ``$3``, ``$4``: the period (µs); ``$5``: the keys with a budget. The pool (key 0) and
#: each budgeted key of a new event with credits in the period; a total made now adds
#: the period's other events (the batch's own are visible here, so they are left out).
CITUS_TOTALS = (
    f"INSERT INTO usage_period_total ({_TOTAL_KEY}, credits, added)"
    " SELECT d.account_id, d.api_key_id, d.ps, d.pe, d.credits"
    f" + CASE WHEN EXISTS ({_EXISTS.format(account='d.account_id')}"
    " AND x.account_id = $1) THEN 0"
    f" ELSE ({_BASELINE.format(account='d.account_id')} AND e.account_id = $1"
    " AND NOT e.id = ANY(string_to_array($2, ',')::bigint[])) END, d.credits"
    " FROM (SELECT n.account_id, s.api_key_id, $3::bigint AS ps, $4::bigint AS pe,"
    " sum(n.credits)::bigint AS credits FROM usage_event n CROSS JOIN LATERAL (VALUES (0),"
    " (CASE WHEN n.api_key_id = ANY(string_to_array($5, ',')::int[]) THEN n.api_key_id END))"
    " AS s(api_key_id) WHERE n.account_id = $1"
    " AND n.id = ANY(string_to_array($2, ',')::bigint[])"
    " AND n.occurred_at_us >= $3 AND n.occurred_at_us < $4 AND n.credits > 0"
    " AND s.api_key_id IS NOT NULL GROUP BY 1, 2) d"
    f" ORDER BY 1, 2{_UPSERT_TAIL}"
)


def events_sql(account_id: int, rows: list[Row], received_us: int) -> Sql:
    """The account's events as one multi-row insert (integers written into the text, each
    event id bound: at most one parameter per event); returns the new ones' ids."""
    q = Sql("postgres", inline_ints=True).add(
        f"INSERT INTO usage_event ({', '.join(EVENT_COLUMNS)}) VALUES ")
    for i, r in enumerate(rows):
        q.add(", (" if i else "(", account_id, ", ", Value(r.event_id), ", ", r.api_key_id,
              ", ", r.endpoint_id, ", ", r.source_id, ", ",
              "NULL" if r.user_id is None else r.user_id, ", ", r.credits, ", ",
              r.occurred_at_us, ", ", received_us, ")")
    return q.add(" ON CONFLICT (account_id, event_id) DO NOTHING RETURNING id, event_id")


async def store_account(raw: asyncpg.Connection, account_id: int, rows: list[Row],
                        received_us: int) -> tuple[list[Row], int]:
    """One account's ``rows`` (in the caller's transaction); returns the rows already
    stored and the number of alerts recorded."""
    q = events_sql(account_id, rows, received_us)
    inserted = {str(r["event_id"]): int(r["id"]) for r in await raw_fetch(raw, q.text, *q.params)}
    already = [r for r in rows if r.event_id not in inserted]
    if not inserted:
        return already, 0
    ids = ",".join(str(i) for i in sorted(inserted.values()))
    await raw_fetch(raw, CITUS_PENDING, account_id, ids)
    settings = await raw_fetch(raw, CITUS_KEYS, account_id, ids)
    start, end = to_us(settings[0]["period_start"]), to_us(settings[0]["period_end"])
    budgets = {int(s["id"]): int(s["credit_budget"]) for s in settings
               if s["id"] is not None and s["credit_budget"] is not None}
    if not any(r.credits > 0 and start <= r.occurred_at_us < end
               for r in rows if r.event_id in inserted):
        return already, 0
    totals: list[Any] = await raw_fetch(raw, CITUS_TOTALS, account_id, ids, start, end,
                                        ",".join(str(k) for k in sorted(budgets)))
    limits = {account_id: (int(settings[0]["credits_granted"]),
                           parse_thresholds(settings[0]["alert_thresholds"]))}
    candidates = alert_candidates(
        [(account_id, int(t["api_key_id"]), start, end, int(t["credits"])) for t in totals],
        limits, budgets, received_us)
    if not candidates:
        return already, 0
    q = insert_alerts_sql("postgres", candidates)
    return already, len(await raw_fetch(raw, q.text, *q.params))

