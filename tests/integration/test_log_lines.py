"""Log lines a client cannot forge or multiply (``gql_usage/logs.py``): control characters
from request paths are escaped (one record, one line, in either format), tracebacks in
text logs cannot pass for records, and warnings a client can provoke at will are
rate-limited."""

from __future__ import annotations

import io
import json
import logging
from urllib.parse import quote, unquote

import httpx
import pytest
from support.config import make_settings

from gql_usage import logs
from gql_usage.app import create_app

FORGED = "2026-01-01 00:00:00,000 INFO gql_usage.access [forged] GET /admin 200 1.0ms"
#: Percent-encoded characters that end a line or drive a terminal: CR LF, LF, CR, VT,
#: FF, RS, ESC, NUL, DEL, NEL (C1), LINE SEPARATOR, PARAGRAPH SEPARATOR.
BREAKERS = ["%0d%0a", "%0a", "%0d", "%0b", "%0c", "%1e", "%1b%5b2J", "%00", "%7f", "%c2%85",
            "%e2%80%a8", "%e2%80%a9"]


async def _request_path(log_format: str, path: str) -> list[str]:
    buffer = io.StringIO()
    handler = logs.make_handler(log_format, buffer)  # type: ignore[arg-type]
    handler.addFilter(lambda record: record.name != "httpx")  # the test client's own line
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        app = create_app(make_settings("sqlite://:memory:"), manage_db=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get(path)
        assert response.status_code == 404
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    return buffer.getvalue().splitlines()  # splits at \r, \n, \x0b, \x0c, \x1c-\x1e, \x85,
    #                                         \u2028 and \u2029 too: what a reader might


@pytest.mark.parametrize("breaker", BREAKERS)
@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_a_path_with_control_characters_is_one_log_line(log_format: str,
                                                              breaker: str) -> None:
    path = f"/nowhere{breaker}" + quote(FORGED)
    lines = await _request_path(log_format, path)
    assert len(lines) == 1, lines
    [line] = lines
    decoded = unquote(path)
    assert not any(ch in line for ch in "\r\n\x0b\x0c\x1e\x1b\x00\x7f\x85\u2028\u2029")
    if log_format == "json":
        record = json.loads(line)
        assert record["path"] == decoded  # escaped in the line, exact once decoded
        assert record["message"].startswith(f"GET {decoded} 404 ")
    else:
        assert f"GET {logs.escape_controls(decoded)} 404 " in line
        assert line.count(" INFO ") == 2  # ours, and the forged text inside the path


def test_escape_controls_names_each_character() -> None:
    assert logs.escape_controls("a\r\nb\tc\x1b[0m\x00\x7f\x85\u2028ü€") == (
        "a\\r\\nb\\tc\\x1b[0m\\x00\\x7f\\x85\\u2028ü€")


def test_a_text_traceback_cannot_pass_for_a_record() -> None:
    buffer = io.StringIO()
    logger = logging.getLogger("gql_usage.test_log_lines")
    handler = logs.make_handler("text", buffer)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise ValueError("bad input\n" + FORGED)
        except ValueError:
            logger.exception("failed on %s", "/x\r\n" + FORGED)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    first, *rest = buffer.getvalue().splitlines()
    assert first.endswith(" ERROR gql_usage.test_log_lines [None] failed on /x\\r\\n" + FORGED)
    assert rest and all(line.startswith("    ") for line in rest), rest
    assert "    Traceback (most recent call last):" in rest
    assert "    " + FORGED in rest  # the exception's own second line, indented


# --- rate limit ------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _record(msg: str, *args: object, level: int = logging.WARNING,
            name: str = "asyncio") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_the_rate_limit_lets_a_burst_through_then_counts() -> None:
    clock = Clock()
    limit = logs.RateLimitFilter(burst=3, seconds=10, clock=clock)
    passed = [limit.filter(_record("accept failed on %s", n)) for n in range(50)]
    assert passed == [True] * 3 + [False] * 47
    other = _record("connection limit (%d) reached", 5)
    assert limit.filter(other)  # another message has its own allowance
    assert limit.filter(_record("accept failed on %s", 0, level=logging.INFO))  # INFO: never
    clock.now += 9.9
    assert not limit.filter(_record("accept failed on %s", 51))
    clock.now += 0.1
    next_window = _record("accept failed on %s", 52)
    assert limit.filter(next_window)
    assert next_window.getMessage() == ("accept failed on 52 (48 more like this suppressed "
                                        "in 10 s)")
    assert next_window.suppressed == 48  # type: ignore[attr-defined]
    clock.now += 10
    quiet = _record("accept failed on %s", 53)
    assert limit.filter(quiet) and quiet.getMessage() == "accept failed on 53"


def test_configure_rate_limits_the_servers_loggers_only() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        stream = io.StringIO()
        logs.configure("json", "INFO", stream=stream)
        logs.configure("json", "INFO", stream=stream)  # twice: still one filter each
        for name in logs.RATE_LIMITED_LOGGERS:
            logger = logging.getLogger(name)
            assert sum(isinstance(f, logs.RateLimitFilter) for f in logger.filters) == 1
            for _ in range(1000):
                logger.warning("socket.accept() out of system resource")
        for _ in range(30):
            logging.getLogger("gql_usage.access").warning("GET /x 404")
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        for name in logs.RATE_LIMITED_LOGGERS:
            for f in list(logging.getLogger(name).filters):
                logging.getLogger(name).removeFilter(f)
    by_logger: dict[str, int] = {}
    for line in lines:
        by_logger[line["logger"]] = by_logger.get(line["logger"], 0) + 1
    assert by_logger == {**{name: logs.RATE_LIMIT_BURST for name in logs.RATE_LIMITED_LOGGERS},
                         "gql_usage.access": 30}
