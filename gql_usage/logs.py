"""Logging: one JSON object per line (or plain text), every record stamped with the
request id of the request it was written for.

``RequestId`` (``gql_usage.http.request_id``) puts the id in ``request_id_var`` for the duration of
a request; ``RequestIdFilter`` copies it onto each record, so code that logs needs no
access to the request. Records written outside a request carry ``request_id: null``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

LogFormat = Literal["json", "text"]

#: The id of the request being handled by the current task (None outside requests).
request_id_var: ContextVar[str | None] = ContextVar("gql_usage_request_id", default=None)

#: Attributes every ``LogRecord`` has; anything else was passed with ``extra=``
#: (uvicorn's ``color_message`` is its message again, with terminal colours).
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {
    "message", "asctime", "request_id", "color_message"}
#: Loggers of the ASGI server; they are routed through our handler (see ``configure``).
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
#: Loggers whose warnings a client can provoke at will (a flood of bad or slow
#: connections): each message is let through at most ``RATE_LIMIT_BURST`` times per
#: ``RATE_LIMIT_SECONDS`` (``RateLimitFilter``).
RATE_LIMITED_LOGGERS = ("asyncio", "uvicorn", "uvicorn.error", "gql_usage.http.server")
RATE_LIMIT_BURST = 10
RATE_LIMIT_SECONDS = 10.0

#: Control characters (C0, DEL, C1) and the Unicode line and paragraph separators: in a
#: text log line, a request path holding them could end the line and forge another.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: What JSON leaves raw in a string of ours (it escapes C0 itself).
_JSON_RAW_CONTROL = re.compile("[\x7f-\x9f\u2028\u2029]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED_ESCAPES.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100
                                        else f"\\u{ord(char):04x}")


def escape_controls(text: str) -> str:
    """``text`` with every control character written as an escape (``\\r``, ``\\x1b``,
    ``\\u2028``): one line, nothing for a terminal to interpret."""
    return _CONTROL.sub(_escape, text)


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


class RateLimitFilter(logging.Filter):
    """At most ``burst`` records of the same message (logger, level and format string)
    per ``seconds``; the first one let through afterwards says how many were dropped
    (``suppressed`` on the record, and in its text). For loggers a client can make
    write a line per connection: a flood of connections must not become a flood of
    log lines (and disk)."""

    def __init__(self, burst: int = RATE_LIMIT_BURST, seconds: float = RATE_LIMIT_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst = burst
        self.seconds = seconds
        self.clock = clock
        #: message key -> [window start, records let through, records dropped]
        self._windows: dict[tuple[str, int, str], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        window = self._windows.get(key)
        if window is None or now - window[0] >= self.seconds:
            dropped = int(window[2]) if window is not None else 0
            if len(self._windows) > 1000:  # bounded memory: forget old windows
                self._windows.clear()
            self._windows[key] = [now, 1, 0]
            if dropped:
                record.msg = (f"{record.getMessage()} ({dropped} more like this suppressed "
                              f"in {self.seconds:g} s)")
                record.args = None
                record.suppressed = dropped
            return True
        if window[1] < self.burst:
            window[1] += 1
            return True
        window[2] += 1
        return False


class RequestIdFilter(logging.Filter):
    """Stamps ``record.request_id`` from the current request (unless already set)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", "request_id", ...extra, "exc_info"?}``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return _JSON_RAW_CONTROL.sub(_json_escape,
                                     json.dumps(entry, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT``, one record per line whatever it holds: control characters in
    the message (a request path with ``%0d%0a``, say) are escaped; a traceback keeps its
    lines, each indented, so that no line of it can pass for the start of a record."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - stdlib name
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:  # noqa: N802 - stdlib name
        return self._indent(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - stdlib name
        return self._indent(super().formatStack(stack_info))

    @staticmethod
    def _indent(text: str) -> str:
        return "\n".join("    " + escape_controls(line) for line in text.split("\n"))


def make_handler(log_format: LogFormat, stream: TextIO | None = None) -> logging.Handler:
    """A stream handler (stderr by default) with our formatter and request-id filter."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    return handler


def configure(log_format: LogFormat = "json", log_level: str = "INFO",
              stream: TextIO | None = None) -> logging.Handler:
    """Route every logger (ours, Tortoise's, uvicorn's) through one handler on the root
    logger. Returns the handler. Safe to call again: it replaces the previous set-up."""
    handler = make_handler(log_format, stream)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(log_level)
    for name in UVICORN_LOGGERS:
        server_logger = logging.getLogger(name)
        for old in list(server_logger.handlers):
            server_logger.removeHandler(old)
        server_logger.propagate = True
        server_logger.setLevel(logging.NOTSET)
    for name in RATE_LIMITED_LOGGERS:
        limited = logging.getLogger(name)
        for old_filter in list(limited.filters):
            if isinstance(old_filter, RateLimitFilter):
                limited.removeFilter(old_filter)
        limited.addFilter(RateLimitFilter())
    return handler
