"""The ingestion of one batch: validated events resolved to ids, stored once each.

A warm batch costs one SQL statement on PostgreSQL (a few in one transaction on SQLite);
an id already stored, by this batch, an earlier or a concurrent one, is never counted
twice. See README, "Service API" and "Bounded batches".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gql_usage.calendar import US, to_us
from gql_usage.ingest import storage
from gql_usage.ingest.catalog import Catalog
from gql_usage.ingest.decode import Undecodable
from gql_usage.ingest.directory import Directory
from gql_usage.ingest.results import IngestResult, Rejection
from gql_usage.ingest.rows import Row, now_us
from gql_usage.ingest.validate import EventIn, ValidEvents, parse_event
from gql_usage.storage.db import connection, dialect


class Ingestor:
    """Ingests batches; holds the id caches, so one lives as long as the app."""

    def __init__(
        self, *, max_future_seconds: int = 300, max_age_seconds: int | None = None
    ) -> None:
        self.catalog = Catalog()
        self.directory = Directory()
        self.max_future_seconds = max_future_seconds
        self.max_age_seconds = max_age_seconds

    async def ingest(self, items: Sequence[Any]) -> IngestResult:
        """Store the valid events of ``items`` (as ``decode_batch`` returns them); every
        other event is rejected with its position and reason."""
        result = IngestResult()
        rejected = result.rejected
        events: list[tuple[int, EventIn, int]] = []  # (index, event, occurred at in µs)
        now = now_us()
        latest = now + self.max_future_seconds * US
        earliest = None if self.max_age_seconds is None else now - self.max_age_seconds * US
        validated = isinstance(items, ValidEvents)
        for index, raw in enumerate(items):
            if isinstance(raw, Undecodable):
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
                       result: IngestResult) -> list[Row]:
        """Events with internal ids; an unknown account, key or user rejects its event."""
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
                rows.append(Row(account_id, e["id"], key_id, endpoints[e["endpoint"]],
                                sources[e["source"]], user_id, e["credits"], occurred, index))
        return rows

    async def _store(self, rows: list[Row], result: IngestResult) -> None:
        """Store each id once; count the new, the duplicates and the conflicting repeats."""
        # First occurrence of an id within the batch wins; later ones are compared to it.
        first: dict[tuple[int, str], Row] = {}
        repeats: list[Row] = []
        for row in rows:
            key = (row.account_id, row.event_id)
            if key in first:
                repeats.append(row)
            else:
                first[key] = row
        await self.catalog.link(first.values())
        # Sorted so concurrent batches take row locks in the same order (no deadlocks);
        # a row sorts by (account, event id) first.
        unique = sorted(first.values())
        stored_before = await storage.store(unique)
        result.accepted += len(unique) - len(stored_before)
        if stored_before:
            stored = await storage.stored_contents(stored_before)
            for row in stored_before:
                _classify_repeat(row, stored.get((row.account_id, row.event_id)), result)
        for row in repeats:
            _classify_repeat(row, first[(row.account_id, row.event_id)].content(), result)


def _classify_repeat(row: Row, stored: tuple[int | None, ...] | None,
                     result: IngestResult) -> None:
    """A repeat with the stored content is a duplicate; with other content, a rejection."""
    if stored is None or stored == row.content():
        result.duplicates += 1
    else:
        result.rejected.append(Rejection(
            row.position,
            f"id: event {row.event_id!r} was already received with different content; "
            "the first version is kept"))
