"""The body of ``POST /v1/usage-events`` as a list of events: a JSON array or NDJSON.

Bounded work for any body: events are counted before any is validated, never decoding
more than the cap allows (``BatchTooLarge``). See README, "Bounded batches".
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from gql_usage.ingest.validate import validate_array


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
    """``BatchTooLarge`` if ``body`` holds more JSON values than ``max_events`` may."""
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

    Counted first, cheaply: over ``max_events`` is ``BatchTooLarge`` before any event is
    validated. An all-valid array comes back as ``ValidEvents`` (one pass); otherwise the
    decoded items (a single object: a batch of one), with ``Undecodable`` markers keeping
    a bad line's position. See README, 'Service API' (Bounded batches).
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
                items.append(Undecodable(f"line {number} is not valid JSON: {exc.msg}"))
            except ValueError:  # a number of more than 4,300 digits
                items.append(Undecodable(f"line {number} holds a number too long to read"))
            except RecursionError:
                items.append(Undecodable(f"line {number} is nested too deeply"))
        return items
    first = len(body) - len(body.lstrip(b" \t\n\r"))
    if body[first:first + 1] == b"[" and body.count(b",") >= max_events:
        try:
            _check_array_length(body[first:].decode("utf-8"), max_events)
        except UnicodeDecodeError as exc:
            raise BodyError(f"body is not valid UTF-8 (byte {exc.start + first})") from None
    if body[:1] == b"[" and b"\\u0000" not in body:
        try:
            valid = validate_array(body)
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
class Undecodable:
    """An NDJSON line that is not JSON: kept in place, so its position is reported."""

    reason: str
