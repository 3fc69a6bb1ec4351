"""``gql-usage serve`` in a child process, for tests of what only a real server shows
(connections, sockets, the server's own log)."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from conftest import JWT_SECRET, SERVICE_TOKEN

#: Longest wait for the server to answer /readyz (migrations on a fresh SQLite file).
START_TIMEOUT_S = 60


@dataclass
class LiveServer:
    port: int
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def live_server(tmp_path: Path, *, open_files: int | None = None,
                **settings: str) -> Iterator[LiveServer]:
    """One worker on a fresh SQLite file; ``settings`` are ``GQL_USAGE_*`` variables
    (without the prefix); ``open_files`` limits the server's file descriptors."""
    port, log = free_port(), tmp_path / f"serve-{time.monotonic_ns()}.log"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GQL_USAGE_")}
    environ.update({"GQL_USAGE_DATABASE_URL": f"sqlite://{tmp_path / 'live.sqlite3'}",
                    "GQL_USAGE_JWT_SECRET": JWT_SECRET,
                    "GQL_USAGE_SERVICE_TOKEN": SERVICE_TOKEN,
                    **{f"GQL_USAGE_{k.upper()}": v for k, v in settings.items()}})

    def limit_files() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gql_usage.cli", "serve", "--port", str(port)],
            env=environ, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=limit_files)
    server = LiveServer(port, log, process)
    try:
        _wait_ready(server)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _wait_ready(server: LiveServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert server.process.poll() is None, "\n".join(server.log_lines())
        with contextlib.suppress(OSError, urllib.error.URLError):
            with urllib.request.urlopen(f"{server.url}/readyz", timeout=5) as response:
                if response.status == 200:
                    return
        time.sleep(0.2)
    raise AssertionError("server not ready:\n" + "\n".join(server.log_lines()))
