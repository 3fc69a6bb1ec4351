"""The dashboard page query, its naive raw-SQL baseline, and the rollup SQL alone.

* ``DASHBOARD``: totals, a DAY series, breakdowns by endpoint and by API key, and every
  key with its usage, as the dashboard app sends it; ``DASHBOARD_V2`` adds the previous
  period and the spikes (version 2's fields).
* ``raw_answer``: the same numbers from hand-written ``GROUP BY``s over ``usage_event``
  (time zone handling by the database itself on PostgreSQL), with no use of gql_usage.
* ``floor_sql``: the one statement gql_usage's analytics layer sends for that query.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bench.data import BERLIN, END, LARGE
from gql_usage.analytics.dimensions import Dimension
from gql_usage.analytics.query import prepare
from gql_usage.analytics.specs import (
    GroupSpec,
    SeriesSpec,
    Spec,
    TotalsSpec,
    UsageQuery,
    spec_order,
)
from gql_usage.calendar import Granularity, to_us
from gql_usage.graphql import ids

DASHBOARD = """query Dashboard($f: UsageFilter!) {
  account {
    name
    usage(filter: $f) {
      calls credits
      series(granularity: DAY) { start calls credits }
      byEndpoint: breakdown(by: ENDPOINT) { key label calls credits shareOfCredits }
      byKey: breakdown(by: API_KEY) { key label calls credits shareOfCredits }
    }
    apiKeys { id name usage(filter: $f) { calls credits } }
  }
}"""

#: Version 2's investigating page: ``DASHBOARD`` plus the previous period (totals, DAY
#: series, top endpoints with an Other row) and the DAY spikes with their endpoint drivers.
DASHBOARD_V2 = """query DashboardV2($f: UsageFilter!) {
  account {
    name
    usage(filter: $f) {
      calls credits
      series(granularity: DAY) { start calls credits }
      byEndpoint: breakdown(by: ENDPOINT) { key label calls credits shareOfCredits }
      byKey: breakdown(by: API_KEY) { key label calls credits shareOfCredits }
      previous {
        calls credits
        series(granularity: DAY) { start calls credits }
        byEndpoint: breakdown(by: ENDPOINT, limit: 10, other: true) {
          key label calls credits shareOfCredits isOther groupCount }
      }
      spikes(granularity: DAY, by: ENDPOINT) {
        bucket { start calls credits } baselineCredits excessCredits score
        drivers { row { key label calls credits } baselineCredits excessCredits }
      }
    }
    apiKeys { id name usage(filter: $f) { calls credits } }
  }
}"""

ZONE = "Europe/Berlin"


#: Timed requests are "the last N days" asked at different moments: request ``i`` ends
#: ``i`` times this many seconds before the data's end (an hour and 7 s: every range
#: edge falls at another minute and second), so that no two timed requests are alike
#: and no cache of answers could serve them.
SHIFT_S = 3_607


def window(days: int, shift: int = 0) -> tuple[datetime, datetime]:
    """The last ``days`` whole local days before the data's end (Berlin midnights), both
    ends moved ``shift * SHIFT_S`` seconds earlier."""
    end_local = END.astimezone(BERLIN)
    start_local = (end_local - timedelta(days=days)).replace(tzinfo=None)
    back = timedelta(seconds=shift * SHIFT_S)
    return start_local.replace(tzinfo=BERLIN).astimezone(UTC) - back, END - back


def variables(days: int, shift: int = 0) -> dict[str, Any]:
    start, end = window(days, shift)
    return {"f": {"from": start.isoformat(), "to": end.isoformat()}}


@dataclass
class Answer:
    """The numbers of one dashboard answer, in a comparable form."""

    totals: tuple[int, int]
    days: dict[str, tuple[int, int]]  # local date -> (calls, credits), non-zero days only
    by_endpoint: dict[str, tuple[int, int]]
    by_key: dict[str, tuple[int, int]]  # key external id -> (calls, credits)
    key_usage: dict[str, tuple[int, int]]  # every key's usage, zero rows dropped

    def differences(self, other: Answer) -> list[str]:
        out = []
        for name in ("totals", "days", "by_endpoint", "by_key", "key_usage"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                if isinstance(mine, dict):
                    keys = sorted(set(mine) ^ set(theirs) | {
                        k for k in set(mine) & set(theirs) if mine[k] != theirs[k]})[:5]
                    diff = [(k, mine.get(k), theirs.get(k)) for k in keys]
                    out.append(f"{name}: differs at {diff}")
                else:
                    out.append(f"{name}: {mine} != {theirs}")
        return out


def graphql_answer(body: dict[str, Any]) -> Answer:
    if body.get("errors"):
        raise RuntimeError(f"GraphQL errors: {body['errors']}")
    usage = body["data"]["account"]["usage"]

    def key_of(global_id: str) -> str:
        return ids.decode(global_id)[1]

    days = {}
    for b in usage["series"]:
        if b["calls"]:
            local = datetime.fromisoformat(b["start"]).astimezone(BERLIN).date().isoformat()
            days[local] = (b["calls"], b["credits"])
    return Answer(
        totals=(usage["calls"], usage["credits"]),
        days=days,
        by_endpoint={r["key"]: (r["calls"], r["credits"]) for r in usage["byEndpoint"]},
        by_key={key_of(r["key"]): (r["calls"], r["credits"]) for r in usage["byKey"]},
        key_usage={key_of(k["id"]): (k["usage"]["calls"], k["usage"]["credits"])
                   for k in body["data"]["account"]["apiKeys"] if k["usage"]["calls"]},
    )


RAW_POSTGRES = {
    "totals": "SELECT COUNT(*), COALESCE(SUM(e.credits), 0) FROM usage_event e {where}",
    "days": "SELECT to_char((to_timestamp(e.occurred_at_us / 1000000.0) AT TIME ZONE "
            "'Europe/Berlin')::date, 'YYYY-MM-DD') AS d, COUNT(*), SUM(e.credits) "
            "FROM usage_event e {where} GROUP BY d",
    "by_endpoint": "SELECT p.path, COUNT(*), SUM(e.credits) FROM usage_event e "
                   "JOIN endpoint p ON p.id = e.endpoint_id {where} GROUP BY p.path",
    "by_key": "SELECT k.external_id, COUNT(*), SUM(e.credits) FROM usage_event e "
              "JOIN api_key k ON k.account_id = e.account_id AND k.id = e.api_key_id {where} "
              "GROUP BY k.external_id",
}
#: The key join names the account too: on Citus ``api_key`` and ``usage_event`` are
#: distributed by ``account_id`` and may only be joined on it (the same rows everywhere).
WHERE = ("WHERE e.account_id = (SELECT id FROM account WHERE external_id = '" + LARGE + "') "
         "AND e.occurred_at_us >= {lo} AND e.occurred_at_us < {hi}")


def _raw_sql(days: int, shift: int) -> dict[str, str]:
    start, end = window(days, shift)
    where = WHERE.format(lo=to_us(start), hi=to_us(end))
    return {name: sql.format(where=where) for name, sql in RAW_POSTGRES.items()}


def _answer_from_rows(rows: dict[str, list[Any]]) -> Answer:
    def table(name: str) -> dict[str, tuple[int, int]]:
        return {str(r[0]): (int(r[1]), int(r[2])) for r in rows[name]}

    totals = rows["totals"][0]
    by_key = table("by_key")
    return Answer((int(totals[0]), int(totals[1])), table("days") if "days" in rows else {},
                  table("by_endpoint"), by_key, dict(by_key))


async def raw_answer_postgres(conn: asyncpg.Connection, days: int, shift: int = 0
                              ) -> Answer:
    rows = {name: list(await conn.fetch(sql)) for name, sql in _raw_sql(days, shift).items()}
    return _answer_from_rows(rows)


def raw_answer_sqlite(path: str, days: int, shift: int = 0) -> Answer:
    """SQLite has no time zone support: the per-day check is left to the series' sum."""
    with sqlite3.connect(path) as conn:
        rows = {name: conn.execute(sql).fetchall()
                for name, sql in _raw_sql(days, shift).items() if name != "days"}
    return _answer_from_rows(rows)


def dashboard_specs() -> list[Spec]:
    return [TotalsSpec(), SeriesSpec(Granularity.DAY), GroupSpec(Dimension.ENDPOINT),
            GroupSpec(Dimension.API_KEY)]


def floor_sql(account_id: int, days: int, dialect: str, shift: int = 0
              ) -> tuple[str, list[Any]]:
    """The analytics statement gql_usage sends for the dashboard (all its aggregates)."""
    start, end = window(days, shift)
    query = UsageQuery(account_id, to_us(start), to_us(end), ZONE)
    prepared = prepare(query, sorted(dashboard_specs(), key=spec_order), dialect)
    assert prepared.sql is not None
    return prepared.sql.text, list(prepared.sql.params)
