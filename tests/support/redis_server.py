"""Throwaway Redis servers for the tests of the shared rate limit.

Like ``tests/support/pg_server.py`` for PostgreSQL: a private ``redis-server`` (Debian package
``redis-server``; ``$GQL_USAGE_REDIS_SERVER`` names another binary) listening only on
``127.0.0.1`` on a free port, with its working directory in a fresh temporary directory,
no persistence (``--save ''``, ``--appendonly no``) and no password. Never the system
service.

Usage::

    with start_redis() as server:
        url = server.url  # redis://127.0.0.1:PORT/0
        server.stop()     # an outage ...
        server.start()    # ... and the same port again, empty
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from support.ports import free_port

__all__ = ["RedisServer", "find_redis_server", "start_redis"]

#: Environment variable naming the ``redis-server`` binary to use.
REDIS_SERVER_ENV = "GQL_USAGE_REDIS_SERVER"
_START_TIMEOUT_S = 20
_START_ATTEMPTS = 3


def find_redis_server() -> str | None:
    """The ``redis-server`` binary, or None if it is not installed."""
    override = os.environ.get(REDIS_SERVER_ENV)
    if override:
        return override if os.access(override, os.X_OK) else None
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None)


def _ping(port: int) -> bool:
    """Whether a Redis answers PING on ``port`` (RESP, no client library needed)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process on a fixed port; stop and start it at will."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start on ``self.port`` (a free one when none was chosen yet)."""
        last = ""
        for _attempt in range(_START_ATTEMPTS):
            port = self.port or free_port()
            log = self.directory / "redis.log"
            process = subprocess.Popen(
                [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.directory), "--logfile", str(log),
                 "--daemonize", "no", "--protected-mode", "yes"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + _START_TIMEOUT_S
            while time.monotonic() < deadline and process.poll() is None:
                if _ping(port):
                    self.port, self.process = port, process
                    return
                time.sleep(0.05)
            _terminate(process)
            last = log.read_text(errors="replace") if log.exists() else "(no log)"
            if self.port:  # a fixed port that is taken: trying again will not help
                break
        raise RuntimeError(f"redis-server did not start ({_START_ATTEMPTS} attempts); "
                           f"last log:\n{last[-3000:]}")

    def stop(self) -> None:
        """Stop the server (the port is kept for ``start``); its data is gone."""
        if self.process is not None:
            _terminate(self.process)
            self.process = None


def _terminate(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@contextlib.contextmanager
def start_redis() -> Iterator[RedisServer]:
    """A running private Redis for the ``with`` block; stopped and its directory removed
    afterwards. Raises RuntimeError if ``redis-server`` is missing or does not start."""
    binary = find_redis_server()
    if binary is None:
        raise RuntimeError("redis-server not found (apt-get install redis-server, or set "
                           f"${REDIS_SERVER_ENV})")
    directory = Path(tempfile.mkdtemp(prefix="gql_usage_redis_"))
    server = RedisServer(binary, directory)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
