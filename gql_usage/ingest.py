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
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, NamedTuple

from pydantic import AwareDatetime, Field, Strict, StrictInt, StrictStr, TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import OperationalError, TransactionManagementError
from tortoise.transactions import in_transaction
from typing_extensions import TypedDict

from gql_usage import cube
from gql_usage.calendar import US, to_us
from gql_usage.db import Sql, Value, connection, dialect, fetch_rows
from gql_usage.untrusted import ECHO_LIMIT, bounded, echo, unicode_problem

MAX_CREDITS = 10**12
SQLITE_ROWS_PER_STATEMENT = 1000
_RETRIES = 5


#: Not blank: at least one non-space character (a search, so any position will do).
#: NUL, which no database stores in text, is refused too (``_NUL_FIELDS``), outside the
#: pattern: a JSON string can only hold NUL as a ``\u0000`` escape, so a body without one
#: skips that check, and the pattern stays cheap (an anchored "no NUL anywhere" pattern
#: doubled the validation time of a 1,000-event batch: 8.9 ms vs 4.6 ms).
_NOT_BLANK = r"\S"
Id = Annotated[StrictStr, Field(min_length=1, max_length=128, pattern=_NOT_BLANK)]
_NUL_FIELDS = ("id", "accountId", "apiKeyId", "userId", "endpoint", "source")


class EventIn(TypedDict):
    """A usage event as producers send it (camelCase JSON); unknown keys are ignored.

    Every rule is checked by pydantic-core, so a batch validates in one pass with no
    Python call per event.
    """

    id: Id
    accountId: Id
    apiKeyId: Id
    userId: Id
    endpoint: Annotated[StrictStr, Field(min_length=1, max_length=512, pattern=_NOT_BLANK)]
    source: Annotated[StrictStr, Field(min_length=1, max_length=128, pattern=_NOT_BLANK)]
    credits: Annotated[StrictInt, Field(ge=0, le=MAX_CREDITS)]
    #: RFC 3339 string with an offset (strict: not a number), not before 1970.
    occurredAt: Annotated[AwareDatetime, Strict(), Field(ge=datetime(1970, 1, 1, tzinfo=UTC))]


_EVENT = TypeAdapter(EventIn)
_EVENT_FIELDS = tuple(EventIn.__annotations__)
_SURROGATE = unicode_problem("\ud800")


def _encodable(value: Any) -> bool:
    """Whether a decoded JSON value holds only text that UTF-8 can encode."""
    if isinstance(value, str):
        return unicode_problem(value) is None
    if isinstance(value, (list, dict)):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return False
    return True
_EVENTS = TypeAdapter(list[EventIn])
_MESSAGES = {
    "missing": "is required",
    "string_pattern_mismatch": "must not be blank",
    "timezone_aware": "must carry a UTC offset (RFC 3339), e.g. 2026-01-31T12:00:00Z",
    "datetime_type": "must be an RFC 3339 string with offset, e.g. 2026-01-31T12:00:00Z",
    "greater_than_equal": None,  # keep pydantic's message, which names the bound
}


#: Field errors named in one message; the rest are counted.
_MAX_DESCRIBED = 10


def describe_validation_error(exc: PydanticValidationError) -> str:
    """``field: what is wrong; ...`` for the first ``_MAX_DESCRIBED`` errors; a field name
    that is the client's own text (an unknown key) is quoted within bounds."""
    errors = exc.errors()
    parts = []
    for err in errors[:_MAX_DESCRIBED]:
        loc = ".".join(p if len(p) <= 64 and (p.isidentifier() or p.isdigit())
                       else echo(p, 64) for p in map(str, err["loc"])) or "event"
        msg = _MESSAGES.get(err["type"]) or err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {bounded(msg, 2 * ECHO_LIMIT)}")
    if len(errors) > _MAX_DESCRIBED:
        parts.append(f"and {len(errors) - _MAX_DESCRIBED:,} more")
    return "; ".join(parts)


def parse_event(raw: Any) -> EventIn:
    """Validate one decoded event; raises ``ValueError`` with a reason naming the field.

    The event is validated as JSON, with exactly the rules of the one-pass batch path.
    """
    if not isinstance(raw, dict):
        raise ValueError(f"event must be a JSON object, got {type(raw).__name__}")
    known = {name: raw[name] for name in _EVENT_FIELDS if name in raw}  # others: ignored
    # A lone surrogate ("\ud800") anywhere in a value has no UTF-8 encoding: validated
    # as JSON, it would fail as "invalid JSON", naming no field.
    unicode = [f"{name}: {_SURROGATE}" for name, value in known.items()
               if not _encodable(value)]
    if unicode:
        raise ValueError("; ".join(unicode))
    try:
        event = _EVENT.validate_json(json.dumps(known))
    except PydanticValidationError as exc:
        raise ValueError(describe_validation_error(exc)) from None
    nul = [name for name in _NUL_FIELDS if "\x00" in event[name]]  # type: ignore[literal-required]
    if nul:
        raise ValueError("; ".join(f"{name}: must not contain NUL (\\u0000) characters"
                                   for name in nul))
    return event


class ValidEvents(list[EventIn]):
    """A batch whose every event already passed validation (``decode_batch``)."""


class BodyError(ValueError):
    """The request body as a whole cannot be read as a batch of events."""


def decode_batch(body: bytes, content_type: str) -> list[Any]:
    """A JSON array, or NDJSON (one event per line; a bad line rejects only that event).

    A JSON array whose events are all valid (and without any ``\\u0000``) comes back as
    ``EventIn`` objects, validated in one pass; otherwise items are the decoded values,
    validated one by one later.
    Lines that fail to decode are returned as ``_Undecodable`` markers so that their
    position is kept and reported.
    """
    if (body[:1] == b"[" and b"\\u0000" not in body and "ndjson" not in content_type
            and "jsonl" not in content_type):
        try:
            return ValidEvents(_EVENTS.validate_json(body))
        except PydanticValidationError:
            pass  # find and name the bad events below
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
            except ValueError:  # a number of more than 4,300 digits
                items.append(_Undecodable(f"line {number} holds a number too long to read"))
            except RecursionError:
                items.append(_Undecodable(f"line {number} is nested too deeply"))
        return items
    try:
        decoded = json.loads(body)
    except UnicodeDecodeError as exc:
        raise BodyError(f"body is not valid UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise BodyError(
            f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError:  # a number of more than 4,300 digits (Python's int limit)
        raise BodyError("body holds a number too long to read") from None
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


class _Row(NamedTuple):
    """A validated event resolved to internal ids, ready to store."""

    account_id: int
    event_id: str
    api_key_id: int
    endpoint_id: int
    source_id: int
    user_id: int
    credits: int
    occurred_at_us: int
    position: int  # in the batch

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
            d, "app_user", {(a, e["userId"]) for _, e, _, a in known})
        endpoints = await self.catalog.endpoint_ids({e["endpoint"] for _, e, _, _ in known})
        sources = await self.catalog.source_ids({e["source"] for _, e, _, _ in known})
        rows = []
        for index, e, occurred, account_id in known:
            key_id = keys.get((account_id, e["apiKeyId"]))
            user_id = users.get((account_id, e["userId"]))
            if key_id is None:
                result.rejected.append(Rejection(
                    index, f"apiKeyId: unknown API key {e['apiKeyId']!r} for account "
                    f"{e['accountId']!r}"))
            elif user_id is None:
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


class Directory:
    """Internal ids of accounts, API keys and users by external id.

    Only found ids are cached (they never change); an unknown id is looked up again next
    time, so a key or user created after a rejected event is found on the retry.
    """

    def __init__(self) -> None:
        self._accounts: dict[str, int] = {}
        self._members: dict[str, dict[tuple[int, str], int]] = {"api_key": {}, "app_user": {}}

    async def accounts(self, d: str, external_ids: set[str]) -> dict[str, int]:
        cache = self._accounts
        missing = sorted(x for x in external_ids if x not in cache)
        if missing:
            q = Sql(d).add('SELECT external_id, id FROM "account" WHERE ')
            q.in_list("external_id", missing)
            cache.update({str(ext): int(i) for ext, i in await fetch_rows(q)})
        return cache

    async def members(self, d: str, table: str,
                      wanted: set[tuple[int, str]]) -> dict[tuple[int, str], int]:
        cache = self._members[table]
        missing = [w for w in wanted if w not in cache]
        if missing:
            q = Sql(d).add(f'SELECT account_id, external_id, id FROM "{table}" WHERE ')
            q.in_list("account_id", sorted({a for a, _ in missing})).add(" AND ")
            q.in_list("external_id", sorted({x for _, x in missing}))
            cache.update({(int(a), str(x)): int(i) for a, x, i in await fetch_rows(q)})
        return cache


def _is_retryable(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("deadlock", "could not serialize", "database is locked"))


def _classify_repeat(row: _Row, stored: tuple[int, ...] | None, result: IngestResult) -> None:
    if stored is None or stored == row.content():
        result.duplicates += 1
    else:
        result.rejected.append(Rejection(
            row.position,
            f"id: event {row.event_id!r} was already received with different content; "
            "the first version is kept"))


_EVENT_COLUMNS = ("account_id", "event_id", "api_key_id", "endpoint_id", "source_id",
                  "user_id", "credits", "occurred_at_us", "received_at_us")
_UNNEST = ", ".join(
    "$2::text[]" if i == 2 else f"string_to_array(${i}, ',')::{'bigint' if i > 6 else 'int'}[]"
    for i in range(1, 9))
#: One statement: the new events, their pending copies, and the positions (1-based) of
#: the rows that were *not* inserted (already stored), which is usually none. Integer
#: columns travel as comma-separated text: asyncpg checks every element of a Python list
#: against ``collections.abc`` when it encodes an array, which cost more than the insert.
_POSTGRES_STORE = (
    f"WITH input AS (SELECT * FROM unnest({_UNNEST})"
    " WITH ORDINALITY AS t(a, e, k, en, s, u, c, o, n)),"
    f" new AS (INSERT INTO usage_event ({', '.join(_EVENT_COLUMNS)})"
    " SELECT a, e, k, en, s, u, c, o, $9 FROM input ORDER BY n"
    " ON CONFLICT (account_id, event_id) DO NOTHING"
    f" RETURNING event_id, {', '.join(cube.PENDING_COLUMNS)}),"
    f" pending AS (INSERT INTO usage_pending ({', '.join(cube.PENDING_COLUMNS)})"
    f" SELECT {', '.join(cube.PENDING_COLUMNS)} FROM new)"
    " SELECT coalesce(array_agg(n), '{}') FROM input WHERE NOT EXISTS"
    " (SELECT FROM new WHERE new.account_id = input.a AND new.event_id = input.e)"
)


def _now_us() -> int:
    return int(time.time() * 1_000_000)


def _joined(values: Iterable[int]) -> str:
    return ",".join(map(str, values))


async def _store_postgres(rows: list[_Row]) -> list[_Row]:
    """Events (and their pending copies) in one statement; returns the rows that were
    already stored."""
    # Columns in _Row's field order, which is the statement's parameter order.
    account, event, key, endpoint, source, user, credits, occurred, _ = zip(*rows, strict=True)
    params = [_joined(account), list(event), _joined(key), _joined(endpoint),
              _joined(source), _joined(user), _joined(credits), _joined(occurred), _now_us()]
    _, result = await connection().execute_query(_POSTGRES_STORE, params)
    return [rows[n - 1] for n in result[0][0]]


async def _insert_events_sqlite(conn: BaseDBAsyncClient, rows: list[_Row]) -> set[tuple[int, str]]:
    """Insert new events; returns the (account, event id) pairs that were new."""
    received = _now_us()
    inserted: set[tuple[int, str]] = set()
    cols = ", ".join(_EVENT_COLUMNS)
    tail = " ON CONFLICT (account_id, event_id) DO NOTHING RETURNING account_id, event_id"
    for start in range(0, len(rows), SQLITE_ROWS_PER_STATEMENT):
        chunk = rows[start:start + SQLITE_ROWS_PER_STATEMENT]
        q = Sql("sqlite").add(f"INSERT INTO usage_event ({cols}) VALUES ")
        for i, r in enumerate(chunk):
            q.add(", (" if i else "(", r.account_id, ", ", Value(r.event_id), ", ",
                  r.api_key_id, ", ", r.endpoint_id, ", ", r.source_id, ", ", r.user_id, ", ",
                  r.credits, ", ", r.occurred_at_us, ", ", received, ")")
        q.add(tail)
        result = await conn.execute_query_dict(q.text, q.params)
        inserted.update((int(r["account_id"]), str(r["event_id"])) for r in result)
    return inserted


async def _insert_pending_sqlite(conn: BaseDBAsyncClient, rows: list[_Row]) -> None:
    for start in range(0, len(rows), SQLITE_ROWS_PER_STATEMENT):
        q = Sql("sqlite").add(
            f"INSERT INTO usage_pending ({', '.join(cube.PENDING_COLUMNS)}) VALUES ")
        for i, r in enumerate(rows[start:start + SQLITE_ROWS_PER_STATEMENT]):
            q.add(", (" if i else "(", r.account_id, ", ", r.api_key_id, ", ", r.endpoint_id,
                  ", ", r.source_id, ", ", r.user_id, ", ", r.credits, ", ",
                  r.occurred_at_us, ")")
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
