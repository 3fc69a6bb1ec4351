"""Untrusted input, checked and echoed within bounds (GraphQL and service API alike).

``echo`` cuts a quoted value to ``ECHO_LIMIT`` characters and ``bounded`` any message to
``MESSAGE_LIMIT`` (the last defence for library messages that quote input in full);
``text_problem``, ``id_problem`` and ``utc_problem`` say why a value cannot be stored.
See README, 'Hostile input'.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime

#: Characters of a user's value quoted in an error message.
ECHO_LIMIT = 200
#: Characters of any error message.
MESSAGE_LIMIT = 1000
#: Longest external id (account, user, API key), as the database columns hold them.
MAX_ID_LENGTH = 128


def echo(value: object, limit: int = ECHO_LIMIT) -> str:
    """``repr`` of ``value`` for a message, at most ``limit`` characters of it."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}… ({len(value):,} characters)"
    text = repr(value)
    if len(text) > limit:
        return f"{text[:limit]}… ({len(text):,} characters)"
    return text


def bounded(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """``message``, cut to at most ``limit`` characters (the cut marked), with any lone
    surrogate written as ``\\ud800`` (a JSON encoder refuses to send one)."""
    if unicode_problem(message):
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(message) <= limit:
        return message
    suffix = f"… (cut from {len(message):,} characters)"
    return message[:limit - len(suffix)] + suffix


def text_problem(value: str, *, controls: bool = False) -> str | None:
    """What makes ``value`` unfit to store or look up, or None; with ``controls``, control
    characters (C0, DEL, C1: newlines, tabs, escapes) are refused too, as in ids."""
    if "\x00" in value:  # neither database stores NUL in text
        return "must not contain NUL (\\u0000) characters"
    problem = unicode_problem(value)  # JSON allows "\ud800"; the database driver would fail
    if problem:
        return problem
    if controls and any(unicodedata.category(c) == "Cc" for c in value):
        return "must not contain control characters (U+0000-U+001F, U+007F-U+009F)"
    return None


def unicode_problem(value: str) -> str | None:
    """Why ``value`` has no UTF-8 encoding (a lone surrogate), or None."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "is not valid Unicode text (it holds a lone surrogate \\ud800-\\udfff)"
    return None


def id_problem(value: str) -> str | None:
    """What makes ``value`` unfit as an external id, or None."""
    if not value or not value.strip():
        return "must not be blank"
    if len(value) > MAX_ID_LENGTH:
        return f"must be at most {MAX_ID_LENGTH} characters (got {len(value):,})"
    return text_problem(value, controls=True)


_FIRST = datetime.min.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
_LAST = datetime.max.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def utc_problem(value: datetime) -> str | None:
    """Why the aware ``value`` has no UTC datetime (years 1 to 9999), or None."""
    try:
        value.astimezone(UTC)
    except (OverflowError, ValueError):
        return f"must lie between {_FIRST} and {_LAST} once converted to UTC"
    return None
