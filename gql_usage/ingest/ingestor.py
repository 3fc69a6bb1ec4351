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
import itertools
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, NamedTuple, NotRequired

from pydantic import AwareDatetime, Field, Strict, StrictInt, StrictStr, TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import OperationalError, TransactionManagementError
from tortoise.transactions import in_transaction
from typing_extensions import TypedDict

from gql_usage import cube
from gql_usage.calendar import US, to_us
from gql_usage.db import Sql, Value, connection, dialect, fetch_rows
from gql_usage.models import NO_USER
from gql_usage.untrusted import ECHO_LIMIT, bounded, echo, unicode_problem

MAX_CREDITS = 10**12
SQLITE_ROWS_PER_STATEMENT = 1000
#: Most rejections listed with their reason in one answer (every rejected position is
#: listed in ``rejectedIndexes`` whatever their number).
MAX_LISTED_REJECTIONS = 100
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
    #: Absent or null: a call made without a user (server to server).
    userId: NotRequired[Id | None]
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
    fields: dict[str, Any] = dict(event)
    nul = [name for name in _NUL_FIELDS if "\x00" in (fields.get(name) or "")]
    if nul:
        raise ValueError("; ".join(f"{name}: must not contain NUL (\\u0000) characters"
                                   for name in nul))
    return event


class ValidEvents(list[EventIn]):
    """A batch whose every event already passed validation (``decode_batch``)."""


class BodyError(ValueError):
    """The request body as a whole cannot be read as a batch of events."""


class BatchTooLarge(ValueError):
    """The body holds more events than one batch may (``max_events``); found while
    counting, before any event was validated."""

    def __init__(self, max_events: int, message: str | None = None) -> None:
        super().__init__(message or f"batch holds more than {max_events} events, the "
                         "maximum (GQL_USAGE_MAX_BATCH_EVENTS); send smaller batches")
        self.max_events = max_events


#: JSON values (counted as commas and opening brackets, strings included) a body may hold
#: per event of the batch cap: an event has eight fields, so a batch of valid events stays
#: far below, while a body of millions of tiny values (``[{"pad": [{}, {}, ...]}]``) is
#: refused before it is decoded into millions of Python objects.
MAX_VALUES_PER_EVENT = 32


def _check_value_count(body: bytes, max_events: int) -> None:
    values = body.count(b",") + body.count(b"{") + body.count(b"[")
    if values > max_events * MAX_VALUES_PER_EVENT:
        raise BatchTooLarge(max_events, (
            f"body holds {values:,} JSON values (commas and brackets), more than "
            f"{MAX_VALUES_PER_EVENT} per event for {max_events} events "
            "(GQL_USAGE_MAX_BATCH_EVENTS); send smaller batches without extra values"))


#: A line holding something other than white space (JSON's: space, tab, CR).
_NDJSON_LINE = re.compile(rb"[^\n]*[^\s][^\n]*")


def _ndjson_lines(body: bytes, max_events: int) -> list[tuple[int, bytes]]:
    """(line number, line) of the non-blank lines; ``BatchTooLarge`` past ``max_events``
    (found after reading at most ``max_events + 1`` lines, not the whole body)."""
    found = list(itertools.islice(_NDJSON_LINE.finditer(body), max_events + 1))
    if len(found) > max_events:
        raise BatchTooLarge(max_events)
    lines = []
    number, position = 1, 0
    for match in found:
        number += body.count(b"\n", position, match.start())
        position = match.start()
        lines.append((number, match.group()))
    return lines


def _after_space(text: str, position: int) -> int:
    """The position of the first non-space character at or after ``position``."""
    while text[position:position + 1] in (" ", "\t", "\n", "\r"):
        position += 1
    return position


def _check_array_length(text: str, max_events: int) -> None:
    """``BatchTooLarge`` if the JSON array ``text`` holds more than ``max_events`` items.

    Decodes one item at a time and stops at ``max_events + 1``: memory stays that of one
    item, and a body of millions of tiny items costs a few milliseconds. A malformed body
    is left to the full decoder, which names the error.
    """
    decoder = json.JSONDecoder()
    position = _after_space(text, 1)
    if text[position:position + 1] == "]":
        return
    for _ in range(max_events):
        try:
            _, position = decoder.raw_decode(text, position)
        except (json.JSONDecodeError, RecursionError):
            return
        position = _after_space(text, position)
        if text[position:position + 1] != ",":
            return
        position = _after_space(text, position + 1)
    raise BatchTooLarge(max_events)  # a comma after the last item the cap allows


def decode_batch(body: bytes, content_type: str, max_events: int) -> list[Any]:
    """A JSON array, or NDJSON (one event per line; a bad line rejects only that event).

    ``BatchTooLarge`` when it holds more than ``max_events`` events: counted first,
    cheaply (a body with fewer commas or lines cannot hold more items), before any
    event is validated.
    A JSON array whose events are all valid (and without any ``\\u0000``) comes back as
    ``EventIn`` objects, validated in one pass; otherwise items are the decoded values,
    validated one by one later.
    Lines that fail to decode are returned as ``_Undecodable`` markers so that their
    position is kept and reported.
    """
    _check_value_count(body, max_events)
    ndjson = "ndjson" in content_type or "jsonl" in content_type
    if ndjson:
        lines = _ndjson_lines(body, max_events) if body.count(b"\n") >= max_events else [
            (number, line) for number, line in enumerate(body.split(b"\n"), start=1)
            if line.strip()]
        items: list[Any] = []
        for number, line in lines:
            try:  # UTF-8 only (json.loads of bytes would guess UTF-16 and drop a BOM)
                items.append(json.loads(line.decode("utf-8")))
            except UnicodeDecodeError as exc:
                raise BodyError(f"line {number} is not valid UTF-8 (byte {exc.start})"
                                ) from None
            except json.JSONDecodeError as exc:
                items.append(_Undecodable(f"line {number} is not valid JSON: {exc.msg}"))
            except ValueError:  # a number of more than 4,300 digits
                items.append(_Undecodable(f"line {number} holds a number too long to read"))
            except RecursionError:
                items.append(_Undecodable(f"line {number} is nested too deeply"))
        return items
    first = len(body) - len(body.lstrip(b" \t\n\r"))
    if body[first:first + 1] == b"[" and body.count(b",") >= max_events:
        try:
            _check_array_length(body[first:].decode("utf-8"), max_events)
        except UnicodeDecodeError as exc:
            raise BodyError(f"body is not valid UTF-8 (byte {exc.start + first})") from None
    if body[:1] == b"[" and b"\\u0000" not in body:
        try:
            valid = ValidEvents(_EVENTS.validate_json(body))
        except PydanticValidationError:
            pass  # find and name the bad events below
        else:
            if len(valid) > max_events:
                raise BatchTooLarge(max_events)
            return valid
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
        """``rejected``: the first ``MAX_LISTED_REJECTIONS`` rejections (lowest positions)
        with their reasons. When anything was rejected, also ``rejectedCount`` (all of
        them) and ``rejectedIndexes`` (every rejected position), so that a producer can
        always tell which events to fix: every other event of the batch is stored
        (accepted now, or a duplicate of a stored one)."""
        ordered = sorted(self.rejected, key=lambda r: r.index)
        answer: dict[str, Any] = {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": [{"index": r.index, "reason": r.reason}
                         for r in ordered[:MAX_LISTED_REJECTIONS]],
        }
        if ordered:
            answer["rejectedCount"] = len(ordered)
            answer["rejectedIndexes"] = [r.index for r in ordered]
        return answer


class _Row(NamedTuple):
    """A validated event resolved to internal ids, ready to store."""

    account_id: int
    event_id: str
    api_key_id: int
    endpoint_id: int
    source_id: int
    user_id: int | None  # None: a call made without a user
    credits: int
    occurred_at_us: int
    position: int  # in the batch

    def content(self) -> tuple[int | None, ...]:
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


def _classify_repeat(row: _Row, stored: tuple[int | None, ...] | None,
                     result: IngestResult) -> None:
    if stored is None or stored == row.content():
        result.duplicates += 1
    else:
        result.rejected.append(Rejection(
            row.position,
            f"id: event {row.event_id!r} was already received with different content; "
            "the first version is kept"))


_EVENT_COLUMNS = ("account_id", "event_id", "api_key_id", "endpoint_id", "source_id",
                  "user_id", "credits", "occurred_at_us", "received_at_us")
#: Ids as comma-separated text; an empty item (a call without a user) is NULL.
_UNNEST = ", ".join(
    "$2::text[]" if i == 2 else f"string_to_array(${i}, ',', '')::{'bigint' if i > 6 else 'int'}[]"
    for i in range(1, 9))
_PENDING_SELECT = ", ".join(f"coalesce(user_id, {NO_USER})" if c == "user_id" else c
                            for c in cube.PENDING_COLUMNS)
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
    f" SELECT {_PENDING_SELECT} FROM new)"
    " SELECT coalesce(array_agg(n), '{}') FROM input WHERE NOT EXISTS"
    " (SELECT FROM new WHERE new.account_id = input.a AND new.event_id = input.e)"
)


def _now_us() -> int:
    return int(time.time() * 1_000_000)


def _joined(values: Iterable[int | None]) -> str:
    return ",".join("" if v is None else str(v) for v in values)


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
            user = NO_USER if r.user_id is None else r.user_id
            q.add(", (" if i else "(", r.account_id, ", ", r.api_key_id, ", ", r.endpoint_id,
                  ", ", r.source_id, ", ", user, ", ", r.credits, ", ",
                  r.occurred_at_us, ")")
        await conn.execute_query(q.text, q.params)


_CONTENT_COLUMNS = ("api_key_id", "endpoint_id", "source_id", "user_id", "credits",
                    "occurred_at_us")
#: The duplicate lookup on PostgreSQL: one probe of the unique index (event_id, account_id)
#: per resent event, whatever the table's statistics say. The account is matched only
#: inside row comparisons led by event_id, which no other index can serve (a plain
#: ``account_id = ...`` would let the planner probe the (account_id, occurred_at_us)
#: index and read the account's every row per event, as a bitmap scan of it with the id
#: list as a filter once took 28 s on a never-analyzed table of 2.86 M rows), and
#: ``POSTGRES_LOOKUP_SETTINGS`` leave the planner a nested loop of index scans as the only
#: plan (no sequential or bitmap scan, hash or merge join; no JIT compilation, which a
#: wild cost estimate from stale statistics would otherwise buy for hundreds of ms).
POSTGRES_LOOKUP = (
    f"SELECT u.account_id, u.event_id, {', '.join('u.' + c for c in _CONTENT_COLUMNS)}"
    " FROM unnest(string_to_array($1, ',')::int[], $2::text[]) AS k(account_id, event_id)"
    " JOIN usage_event u ON (u.event_id, u.account_id) >= (k.event_id, k.account_id)"
    " AND (u.event_id, u.account_id) <= (k.event_id, k.account_id)"
)
POSTGRES_LOOKUP_SETTINGS = ("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off;"
                            " SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off;"
                            " SET LOCAL enable_material = off; SET LOCAL jit = off")
#: SQLite: the same index, named (``INDEXED BY`` fails rather than plan another way).
SQLITE_LOOKUP = (f"SELECT account_id, event_id, {', '.join(_CONTENT_COLUMNS)} FROM usage_event"
                 " INDEXED BY usage_event_event_account WHERE account_id = ")


def lookup_sql(d: str, rows: Sequence[_Row]) -> list[Sql]:
    """The statements reading the stored versions of ``rows`` (by account and event id)."""
    if d == "postgres":
        q = Sql(d).add(POSTGRES_LOOKUP)
        q.params.extend([_joined(r.account_id for r in rows), [r.event_id for r in rows]])
        return [q]
    by_account: dict[int, list[str]] = {}
    for r in rows:
        by_account.setdefault(r.account_id, []).append(r.event_id)
    out = []
    for account_id, ids in sorted(by_account.items()):
        for start in range(0, len(ids), SQLITE_ROWS_PER_STATEMENT):
            q = Sql(d).add(SQLITE_LOOKUP, account_id, " AND ")
            out.append(q.in_list("event_id", ids[start:start + SQLITE_ROWS_PER_STATEMENT]))
    return out


async def _stored_contents(rows: list[_Row]) -> dict[tuple[int, str], tuple[int | None, ...]]:
    conn = connection()
    d = dialect(conn)
    found: list[Sequence[Any]] = []
    if d == "postgres":
        # The settings hold for this transaction only. On a pooled asyncpg connection of
        # our own, not Tortoise's ``in_transaction``: its context variable outlived a
        # rollback that failed in a database crash, and the task's next statements went
        # to the dead transaction's released connection (a 500 instead of a 503).
        async with conn.acquire_connection() as raw, raw.transaction():
            await raw.execute(POSTGRES_LOOKUP_SETTINGS)
            for q in lookup_sql(d, rows):
                found += await raw.fetch(q.text, *q.params)
    else:
        for q in lookup_sql(d, rows):
            found += await fetch_rows(q, conn)
    return {(int(account_id), str(event_id)): tuple(None if c is None else int(c) for c in content)
            for account_id, event_id, *content in found}
