"""Ingestion of usage events: validation and idempotent storage.

A warm batch (accounts, keys, users, endpoints and sources seen before; their ids are
cached, since ids never change) costs **one** SQL statement on PostgreSQL: a
data-modifying ``WITH`` that inserts the events with ``ON CONFLICT DO NOTHING RETURNING``
and copies exactly the rows it returned to ``usage_pending``, from where compaction
(``gql_usage.cube``) folds them into the cube. A duplicate id, in the same batch, a
later batch or a concurrent one, is therefore never counted twice. On SQLite the same
happens in one transaction of a few statements.

A JSON array body is validated in one pass by pydantic-core (``decode_batch``); only a
batch with a bad event takes the slower per-event path that names each bad event.

Bounded work for any body: the events of a batch are counted before anything is
validated, without decoding more than the cap (``GQL_USAGE_MAX_BATCH_EVENTS``) allows, so a
body of millions of tiny items or lines is refused at once (``BatchTooLarge``) instead of
collecting millions of errors; the answer lists at most ``MAX_LISTED_REJECTIONS`` reasons
and every rejected position (``IngestResult.as_json``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from tortoise.exceptions import OperationalError, TransactionManagementError
from tortoise.transactions import in_transaction

from gql_usage.calendar import US, to_us
from gql_usage.db import Sql, connection, dialect
from gql_usage.ingest.catalog import Catalog
from gql_usage.ingest.decode import _Undecodable
from gql_usage.ingest.directory import Directory
from gql_usage.ingest.results import IngestResult, Rejection
from gql_usage.ingest.rows import _Row
from gql_usage.ingest.storage import _stored_contents
from gql_usage.ingest.store_postgres import _store_postgres
from gql_usage.ingest.store_sqlite import _insert_events_sqlite, _insert_pending_sqlite
from gql_usage.ingest.validate import EventIn, ValidEvents, parse_event

_RETRIES = 5


class Ingestor:
    def __init__(
        self, *, max_future_seconds: int = 300, max_age_seconds: int | None = None
    ) -> None:
        self.catalog = Catalog()
        self.directory = Directory()
        self.max_future_seconds = max_future_seconds
        self.max_age_seconds = max_age_seconds

    async def ingest(self, items: Sequence[Any]) -> IngestResult:
        result = IngestResult()
        rejected = result.rejected
        events: list[tuple[int, EventIn, int]] = []  # (index, event, occurred at in µs)
        now_us = int(time.time() * US)
        latest = now_us + self.max_future_seconds * US
        earliest = None if self.max_age_seconds is None else now_us - self.max_age_seconds * US
        validated = isinstance(items, ValidEvents)
        for index, raw in enumerate(items):
            if isinstance(raw, _Undecodable):
                rejected.append(Rejection(index, raw.reason))
                continue
            if validated:
                event: EventIn = raw
            else:
                try:
                    event = parse_event(raw)
                except ValueError as exc:
                    rejected.append(Rejection(index, str(exc)))
                    continue
            occurred = to_us(event["occurredAt"])
            if occurred > latest:
                rejected.append(Rejection(
                    index, f"occurredAt: {event['occurredAt'].isoformat()} is more than "
                    f"{self.max_future_seconds} seconds in the future"))
            elif earliest is not None and occurred < earliest:
                rejected.append(Rejection(
                    index, f"occurredAt: older than the configured maximum age of "
                    f"{self.max_age_seconds} seconds"))
            else:
                events.append((index, event, occurred))
        if events:
            rows = await self._resolve(events, result)
            if rows:
                await self._store(rows, result)
        return result

    async def _resolve(self, events: list[tuple[int, EventIn, int]],
                       result: IngestResult) -> list[_Row]:
        d = dialect(connection())
        accounts = await self.directory.accounts(d, {e["accountId"] for _, e, _ in events})
        known = []
        for index, e, occurred in events:
            account_id = accounts.get(e["accountId"])
            if account_id is None:
                result.rejected.append(Rejection(
                    index, f"accountId: unknown account {e['accountId']!r}"))
            else:
                known.append((index, e, occurred, account_id))
        if not known:
            return []
        keys = await self.directory.members(
            d, "api_key", {(a, e["apiKeyId"]) for _, e, _, a in known})
        users = await self.directory.members(
            d, "app_user", {(a, u) for _, e, _, a in known if (u := e.get("userId")) is not None})
        endpoints = await self.catalog.endpoint_ids({e["endpoint"] for _, e, _, _ in known})
        sources = await self.catalog.source_ids({e["source"] for _, e, _, _ in known})
        rows = []
        for index, e, occurred, account_id in known:
            key_id = keys.get((account_id, e["apiKeyId"]))
            user = e.get("userId")
            user_id = None if user is None else users.get((account_id, user))
            if key_id is None:
                result.rejected.append(Rejection(
                    index, f"apiKeyId: unknown API key {e['apiKeyId']!r} for account "
                    f"{e['accountId']!r}"))
            elif user is not None and user_id is None:
                result.rejected.append(Rejection(
                    index, f"userId: unknown user {e['userId']!r} for account "
                    f"{e['accountId']!r}"))
            else:
                rows.append(_Row(account_id, e["id"], key_id, endpoints[e["endpoint"]],
                                 sources[e["source"]], user_id, e["credits"], occurred, index))
        return rows

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
        await self._link_dimensions(list(first.values()))
        # Sorted so concurrent batches take row locks in the same order (no deadlocks);
        # a row sorts by (account, event id) first.
        unique = sorted(first.values())
        for attempt in range(_RETRIES):
            try:
                if dialect(connection()) == "postgres":
                    stored_before = await _store_postgres(unique)
                else:
                    async with in_transaction("default") as conn:
                        inserted = await _insert_events_sqlite(conn, unique)
                        await _insert_pending_sqlite(conn, [first[k] for k in sorted(inserted)])
                    stored_before = [r for k, r in first.items() if k not in inserted]
                break
            except (OperationalError, TransactionManagementError) as exc:
                if attempt == _RETRIES - 1 or not _is_retryable(exc):
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
        result.accepted += len(unique) - len(stored_before)
        if stored_before:
            stored = await _stored_contents(stored_before)
            for row in stored_before:
                _classify_repeat(row, stored.get((row.account_id, row.event_id)), result)
        for row in repeats:
            _classify_repeat(row, first[(row.account_id, row.event_id)].content(), result)

    async def _link_dimensions(self, rows: list[_Row]) -> None:
        """Record which endpoints and sources each account has used (new pairs only).

        Written before the events (idempotently): a link never points at nothing for
        long, and an event is never stored without its link.
        """
        for table, column, seen, pairs in (
            ("account_endpoint", "endpoint_id", self.catalog.account_endpoints,
             {(r.account_id, r.endpoint_id) for r in rows}),
            ("account_source", "source_id", self.catalog.account_sources,
             {(r.account_id, r.source_id) for r in rows}),
        ):
            new = sorted(pairs - seen)
            if not new:
                continue
            conn = connection()
            q = Sql(dialect(conn)).add(f"INSERT INTO {table} (account_id, {column}) VALUES ")
            for i, (account_id, value) in enumerate(new):
                q.add(", (" if i else "(", account_id, ", ", value, ")")
            q.add(f" ON CONFLICT (account_id, {column}) DO NOTHING")
            await conn.execute_query(q.text, q.params)
            seen.update(new)


def _is_retryable(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("deadlock", "could not serialize", "database is locked"))


def _classify_repeat(row: _Row, stored: tuple[int | None, ...] | None,
                     result: IngestResult) -> None:
    if stored is None or stored == row.content():
        result.duplicates += 1
    else:
        result.rejected.append(Rejection(
            row.position,
            f"id: event {row.event_id!r} was already received with different content; "
            "the first version is kept"))
