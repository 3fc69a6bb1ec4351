"""Logging: one JSON object per line (or plain text), every record stamped with the
request id of the request it was written for.

``RequestId`` (``gql_usage.http``) puts the id in ``request_id_var`` for the duration of
a request; ``RequestIdFilter`` copies it onto each record, so code that logs needs no
access to the request. Records written outside a request carry ``request_id: null``.
"""

from __future__ import annotations

import json
import logging
import sys
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
        return json.dumps(entry, default=str, ensure_ascii=False)


def make_handler(log_format: LogFormat, stream: TextIO | None = None) -> logging.Handler:
    """A stream handler (stderr by default) with our formatter and request-id filter."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else
                         logging.Formatter(TEXT_FORMAT))
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
    return handler
