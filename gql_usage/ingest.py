"""Ingestion of usage events: validation, idempotent storage and rollup maintenance.

One batch costs a handful of statements whatever its size: three look-ups (accounts,
keys, users), catalogue upserts only for endpoints and sources not seen before, then one
transaction holding one multi-row ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` into
``usage_event`` and one multi-row upsert into ``usage_rollup``. The rollup cells are
summed from exactly the rows the event insert reports as new, so a duplicate id — in the
same batch, a later batch or a concurrent one — is never counted twice, and the rollups
always equal an aggregation of the stored events.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr
from pydantic import ValidationError as PydanticValidationError
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import OperationalError, TransactionManagementError
from tortoise.transactions import in_transaction

from gql_usage.calendar import to_us
from gql_usage.db import Sql, Value, connection, dialect, fetch_rows
from gql_usage.models import SLOT_SECONDS

MAX_CREDITS = 10**12
SQLITE_ROWS_PER_STATEMENT = 1000
_RETRIES = 5


def _rfc3339(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must carry a UTC offset (RFC 3339), e.g. 2026-01-31T12:00:00Z")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


Id = Annotated[StrictStr, Field(min_length=1, max_length=128), AfterValidator(_not_blank)]


class EventIn(BaseModel):
    """A usage event as producers send it (camelCase JSON)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: Id
    accountId: Id
    apiKeyId: Id
    userId: Id
    endpoint: Annotated[StrictStr, Field(min_length=1, max_length=512), AfterValidator(_not_blank)]
    source: Annotated[StrictStr, Field(min_length=1, max_length=128), AfterValidator(_not_blank)]
    credits: Annotated[StrictInt, Field(ge=0, le=MAX_CREDITS)]
    occurredAt: Annotated[datetime, AfterValidator(_rfc3339)]


def describe_validation_error(exc: PydanticValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "event"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "is required"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def parse_event(raw: Any) -> EventIn:
    """Validate one decoded event; raises ``ValueError`` with a reason naming the field."""
    if not isinstance(raw, dict):
        raise ValueError(f"event must be a JSON object, got {type(raw).__name__}")
    occurred = raw.get("occurredAt")
    if occurred is not None and not isinstance(occurred, str):
        raise ValueError("occurredAt: must be an RFC 3339 string with offset")
    try:
        return EventIn.model_validate(raw)
    except PydanticValidationError as exc:
        raise ValueError(describe_validation_error(exc)) from None


class BodyError(ValueError):
    """The request body as a whole cannot be read as a batch of events."""


def decode_batch(body: bytes, content_type: str) -> list[Any]:
    """A JSON array, or NDJSON (one event per line; a bad line rejects only that event).

    Lines that fail to decode are returned as ``_Undecodable`` markers so that their
    position is kept and reported.
    """
    if "ndjson" in content_type or "jsonl" in content_type:
        items: list[Any] = []
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BodyError(f"body is not valid UTF-8 (byte {exc.start})") from None
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                items.append(_Undecodable(f"line {number} is not valid JSON: {exc.msg}"))
        return items
    try:
        decoded = json.loads(body)
    except UnicodeDecodeError as exc:
        raise BodyError(f"body is not valid UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise BodyError(
            f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise BodyError("body is nested too deeply") from None
    if isinstance(decoded, dict):
        decoded = [decoded]
    if not isinstance(decoded, list):
        raise BodyError("body must be a JSON array of events (or NDJSON)")
    return decoded


@dataclass(frozen=True)
class _Undecodable:
    reason: str


@dataclass
class Rejection:
    index: int
    reason: str


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": [{"index": r.index, "reason": r.reason} for r in sorted(
                self.rejected, key=lambda r: r.index)],
        }


@dataclass(frozen=True)
class _Row:
    """A validated event resolved to internal ids, ready to store."""

    index: int
    account_id: int
    event_id: str
    api_key_id: int
    endpoint_id: int
    source_id: int
    user_id: int
    credits: int
    occurred_at_us: int

    def content(self) -> tuple[int, int, int, int, int, int]:
        return (self.api_key_id, self.endpoint_id, self.source_id, self.user_id,
                self.credits, self.occurred_at_us)


def source_display_name(key: str) -> str:
    return key.replace("_", " ").replace("-", " ").strip().capitalize() or key


class Catalog:
    """Endpoint and source ids by path/key. Ids never change, so they are cached."""

    def __init__(self) -> None:
        self.endpoints: dict[str, int] = {}
        self.sources: dict[str, int] = {}
        self.account_endpoints: set[tuple[int, int]] = set()
        self.account_sources: set[tuple[int, int]] = set()

    async def endpoint_ids(self, paths: Iterable[str]) -> dict[str, int]:
        return await self._ids("endpoint", "path", None, self.endpoints, paths)

    async def source_ids(self, keys: Iterable[str]) -> dict[str, int]:
        return await self._ids("source", "key", source_display_name, self.sources, keys)

    async def _ids(self, table: str, column: str, name_of: Any, cache: dict[str, int],
                   values: Iterable[str]) -> dict[str, int]:
        missing = sorted({v for v in values if v not in cache})
        if missing:
            conn = connection()
            d = dialect(conn)
            found = await self._select(d, table, column, missing)
            absent = [v for v in missing if v not in found]
            if absent:
                q = Sql(d)
                cols = f'"{column}", "listed", "name"' if name_of else f'"{column}", "listed"'
                q.add(f'INSERT INTO "{table}" ({cols}) VALUES ')
                for i, v in enumerate(absent):
                    q.add(", " if i else "", "(", Value(v), ", ", False)
                    if name_of:
                        q.add(", ", Value(name_of(v)))
                    q.add(")")
                q.add(f' ON CONFLICT ("{column}") DO NOTHING')
                await conn.execute_query(q.text, q.params)
                found.update(await self._select(d, table, column, absent))
            cache.update(found)
        return cache

    @staticmethod
    async def _select(d: str, table: str, column: str, values: Sequence[str]) -> dict[str, int]:
        q = Sql(d).add(f'SELECT "{column}", id FROM "{table}" WHERE ')
        q.in_list(f'"{column}"', list(values))
        return {str(v): int(i) for v, i in await fetch_rows(q)}


class Ingestor:
    def __init__(
        self, *, max_future_seconds: int = 300, max_age_seconds: int | None = None
    ) -> None:
        self.catalog = Catalog()
        self.max_future_seconds = max_future_seconds
        self.max_age_seconds = max_age_seconds

    async def ingest(self, items: Sequence[Any]) -> IngestResult:
        result = IngestResult()
        events: list[tuple[int, EventIn]] = []
        now = time.time()
        for index, raw in enumerate(items):
            if isinstance(raw, _Undecodable):
                result.rejected.append(Rejection(index, raw.reason))
                continue
            try:
                event = parse_event(raw)
            except ValueError as exc:
                result.rejected.append(Rejection(index, str(exc)))
                continue
            ts = event.occurredAt.timestamp()
            if ts > now + self.max_future_seconds:
                result.rejected.append(Rejection(
                    index, f"occurredAt: {event.occurredAt.isoformat()} is more than "
                    f"{self.max_future_seconds} seconds in the future"))
                continue
            if self.max_age_seconds is not None and ts < now - self.max_age_seconds:
                result.rejected.append(Rejection(
                    index, f"occurredAt: older than the configured maximum age of "
                    f"{self.max_age_seconds} seconds"))
                continue
            events.append((index, event))
        if events:
            rows = await self._resolve(events, result)
            if rows:
                await self._store(rows, result)
        return result

    async def _resolve(self, events: list[tuple[int, EventIn]], result: IngestResult) -> list[_Row]:
        conn = connection()
        d = dialect(conn)
        account_ext = sorted({e.accountId for _, e in events})
        q = Sql(d).add('SELECT external_id, id FROM "account" WHERE ')
        q.in_list("external_id", account_ext)
        accounts = {str(ext): int(i) for ext, i in await fetch_rows(q, conn)}
        known = [(i, e) for i, e in events if e.accountId in accounts]
        for i, e in events:
            if e.accountId not in accounts:
                result.rejected.append(Rejection(i, f"accountId: unknown account {e.accountId!r}"))
        if not known:
            return []
        account_ids = sorted({accounts[e.accountId] for _, e in known})
        keys = await self._members(d, "api_key", account_ids, {e.apiKeyId for _, e in known})
        users = await self._members(d, "app_user", account_ids, {e.userId for _, e in known})
        endpoints = await self.catalog.endpoint_ids(
            {e.endpoint for i, e in known})
        sources = await self.catalog.source_ids({e.source for _, e in known})
        rows = []
        for index, e in known:
            account_id = accounts[e.accountId]
            key_id = keys.get((account_id, e.apiKeyId))
            user_id = users.get((account_id, e.userId))
            if key_id is None:
                result.rejected.append(Rejection(
                    index, f"apiKeyId: unknown API key {e.apiKeyId!r} for account {e.accountId!r}"))
                continue
            if user_id is None:
                result.rejected.append(Rejection(
                    index, f"userId: unknown user {e.userId!r} for account {e.accountId!r}"))
                continue
            rows.append(_Row(index, account_id, e.id, key_id, endpoints[e.endpoint],
                             sources[e.source], user_id, e.credits, to_us(e.occurredAt)))
        return rows

    @staticmethod
    async def _members(d: str, table: str, account_ids: list[int],
                       external_ids: set[str]) -> dict[tuple[int, str], int]:
        q = Sql(d).add(f'SELECT account_id, external_id, id FROM "{table}" WHERE ')
        q.in_list("account_id", account_ids).add(" AND ")
        q.in_list("external_id", sorted(external_ids))
        return {(int(a), str(x)): int(i) for a, x, i in await fetch_rows(q)}

    async def _store(self, rows: list[_Row], result: IngestResult) -> None:
        # First occurrence of an id within the batch wins; later ones are compared to it.
        first: dict[tuple[int, str], _Row] = {}
        repeats: list[_Row] = []
        for row in rows:
            key = (row.account_id, row.event_id)
            if key in first:
                repeats.append(row)
            else:
                first[key] = row
        # Sorted so concurrent batches take row locks in the same order (no deadlocks).
        unique = sorted(first.values(), key=lambda r: (r.account_id, r.event_id))
        for attempt in range(_RETRIES):
            try:
                async with in_transaction("default") as conn:
                    inserted = await _insert_events(conn, unique)
                    fresh = [first[k] for k in sorted(inserted)]
                    await _upsert_rollups(conn, fresh)
                    linked = await self._link_dimensions(conn, fresh)
                for seen, new in linked:  # cached only once committed
                    seen.update(new)
                break
            except (OperationalError, TransactionManagementError) as exc:
                if attempt == _RETRIES - 1 or not _is_retryable(exc):
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
        result.accepted += len(inserted)
        stored_before = [r for k, r in first.items() if k not in inserted]
        if stored_before:
            stored = await _stored_contents(stored_before)
            for row in stored_before:
                _classify_repeat(row, stored.get((row.account_id, row.event_id)), result)
        for row in repeats:
            _classify_repeat(row, first[(row.account_id, row.event_id)].content(), result)


    async def _link_dimensions(
        self, conn: BaseDBAsyncClient, rows: list[_Row]
    ) -> list[tuple[set[tuple[int, int]], list[tuple[int, int]]]]:
        """Record which endpoints and sources each account has used (new pairs only)."""
        linked = []
        for table, column, seen, pairs in (
            ("account_endpoint", "endpoint_id", self.catalog.account_endpoints,
             {(r.account_id, r.endpoint_id) for r in rows}),
            ("account_source", "source_id", self.catalog.account_sources,
             {(r.account_id, r.source_id) for r in rows}),
        ):
            new = sorted(pairs - seen)
            if not new:
                continue
            q = Sql(dialect(conn)).add(f"INSERT INTO {table} (account_id, {column}) VALUES ")
            for i, (account_id, value) in enumerate(new):
                q.add(", (" if i else "(", account_id, ", ", value, ")")
            q.add(f" ON CONFLICT (account_id, {column}) DO NOTHING")
            await conn.execute_query(q.text, q.params)
            linked.append((seen, new))
        return linked


def _is_retryable(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("deadlock", "could not serialize", "database is locked"))


def _classify_repeat(row: _Row, stored: tuple[int, ...] | None, result: IngestResult) -> None:
    if stored is None or stored == row.content():
        result.duplicates += 1
    else:
        result.rejected.append(Rejection(
            row.index,
            f"id: event {row.event_id!r} was already received with different content; "
            "the first version is kept"))


_EVENT_COLUMNS = ("account_id", "event_id", "api_key_id", "endpoint_id", "source_id",
                  "user_id", "credits", "occurred_at_us", "received_at_us")
_ROLLUP_KEY = ("account_id", "slot", "api_key_id", "endpoint_id", "source_id", "user_id")


async def _insert_events(conn: BaseDBAsyncClient, rows: list[_Row]) -> set[tuple[int, str]]:
    """Insert new events; returns the (account, event id) pairs that were new."""
    received = int(time.time() * 1_000_000)
    d = dialect(conn)
    inserted: set[tuple[int, str]] = set()
    cols = ", ".join(_EVENT_COLUMNS)
    tail = " ON CONFLICT (account_id, event_id) DO NOTHING RETURNING account_id, event_id"
    if d == "postgres":
        q = Sql(d).add(
            f"INSERT INTO usage_event ({cols}) SELECT a, e, k, en, s, u, c, o, ", received,
            " FROM unnest(", [r.account_id for r in rows], "::int[], ",
            [r.event_id for r in rows], "::text[], ",
            [r.api_key_id for r in rows], "::int[], ",
            [r.endpoint_id for r in rows], "::int[], ",
            [r.source_id for r in rows], "::int[], ",
            [r.user_id for r in rows], "::int[], ",
            [r.credits for r in rows], "::bigint[], ",
            [r.occurred_at_us for r in rows], "::bigint[]) WITH ORDINALITY "
            "AS t(a, e, k, en, s, u, c, o, n) ORDER BY n", tail)
        result = await conn.execute_query_dict(q.text, q.params)
        inserted.update((int(r["account_id"]), str(r["event_id"])) for r in result)
        return inserted
    for start in range(0, len(rows), SQLITE_ROWS_PER_STATEMENT):
        chunk = rows[start:start + SQLITE_ROWS_PER_STATEMENT]
        q = Sql(d).add(f"INSERT INTO usage_event ({cols}) VALUES ")
        for i, r in enumerate(chunk):
            q.add(", (" if i else "(", r.account_id, ", ", Value(r.event_id), ", ",
                  r.api_key_id, ", ", r.endpoint_id, ", ", r.source_id, ", ", r.user_id, ", ",
                  r.credits, ", ", r.occurred_at_us, ", ", received, ")")
        q.add(tail)
        result = await conn.execute_query_dict(q.text, q.params)
        inserted.update((int(r["account_id"]), str(r["event_id"])) for r in result)
    return inserted


def rollup_cells(rows: Iterable[_Row]) -> dict[tuple[int, ...], list[int]]:
    cells: dict[tuple[int, ...], list[int]] = {}
    slot_us = SLOT_SECONDS * 1_000_000
    for r in rows:
        key = (r.account_id, (r.occurred_at_us // slot_us) * SLOT_SECONDS, r.api_key_id,
               r.endpoint_id, r.source_id, r.user_id)
        cell = cells.get(key)
        if cell is None:
            cells[key] = [1, r.credits]
        else:
            cell[0] += 1
            cell[1] += r.credits
    return cells


async def _upsert_rollups(conn: BaseDBAsyncClient, rows: list[_Row]) -> None:
    if not rows:
        return
    cells = sorted(rollup_cells(rows).items())
    d = dialect(conn)
    key_cols = ", ".join(_ROLLUP_KEY)
    tail = (f" ON CONFLICT ({key_cols}) DO UPDATE SET calls = usage_rollup.calls + excluded.calls,"
            " credits = usage_rollup.credits + excluded.credits")
    if d == "postgres":
        cols = list(zip(*[k + tuple(v) for k, v in cells], strict=True))
        types = ("int", "bigint", "int", "int", "int", "int", "bigint", "bigint")
        q = Sql(d).add(f"INSERT INTO usage_rollup ({key_cols}, calls, credits) "
                       "SELECT a, sl, k, en, s, u, c, cr FROM unnest(")
        for i, (col, typ) in enumerate(zip(cols, types, strict=True)):
            q.add(", " if i else "", list(col), f"::{typ}[]")
        q.add(") WITH ORDINALITY AS t(a, sl, k, en, s, u, c, cr, n) ORDER BY n", tail)
        await conn.execute_query(q.text, q.params)
        return
    for start in range(0, len(cells), SQLITE_ROWS_PER_STATEMENT):
        q = Sql(d).add(f"INSERT INTO usage_rollup ({key_cols}, calls, credits) VALUES ")
        for i, (key, (calls, credits)) in enumerate(cells[start:start + SQLITE_ROWS_PER_STATEMENT]):
            q.add(", (" if i else "(")
            for value in (*key, calls, credits):
                q.add(value, ", ")
            q.parts[-1] = ")"
        q.add(tail)
        await conn.execute_query(q.text, q.params)


async def _stored_contents(rows: list[_Row]) -> dict[tuple[int, str], tuple[int, ...]]:
    conn = connection()
    d = dialect(conn)
    out: dict[tuple[int, str], tuple[int, ...]] = {}
    by_account: dict[int, list[str]] = {}
    for r in rows:
        by_account.setdefault(r.account_id, []).append(r.event_id)
    for account_id, ids in sorted(by_account.items()):
        q = Sql(d).add("SELECT event_id, api_key_id, endpoint_id, source_id, user_id, credits, "
                       "occurred_at_us FROM usage_event WHERE account_id = ", account_id, " AND ")
        q.in_list("event_id", ids)
        for event_id, *content in await fetch_rows(q, conn):
            out[(account_id, str(event_id))] = tuple(int(c) for c in content)
    return out
