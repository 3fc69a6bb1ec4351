"""``gql-usage serve`` in a child process, for tests of what only a real server shows
(connections, sockets, signals, the server's own log):

* :func:`serve_process`: the command in its own process group, stopped (SIGTERM, then
  SIGKILL) on exit;
* :func:`live_server`: one worker on a fresh SQLite file, ready to answer;
* :class:`Server` / :func:`served`: a server on a given database that a test can signal,
  kill and start again on the same port (tests/system/test_faults.py)."""

from __future__ import annotations

import asyncio
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
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from support.config import JWT_SECRET, SERVICE_TOKEN
from support.ports import free_port

#: Longest wait for the server to answer /readyz (migrations on a fresh SQLite file).
START_TIMEOUT_S = 60
#: Retry-After (seconds) of the 503 answers of a :class:`Server`.
RETRY_AFTER = 1
#: The repository (the package is found from there even when not installed).
ROOT = Path(__file__).resolve().parents[2]


def serve_env(**settings: str) -> dict[str, str]:
    """This process's environment without its ``GQL_USAGE_*`` variables, plus the test
    secrets and ``settings`` (``GQL_USAGE_*`` names without the prefix, any case)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GQL_USAGE_")}
    environ.update({"GQL_USAGE_JWT_SECRET": JWT_SECRET, "GQL_USAGE_SERVICE_TOKEN": SERVICE_TOKEN,
                    **{f"GQL_USAGE_{k.upper()}": v for k, v in settings.items()}})
    return environ


@contextlib.contextmanager
def serve_process(*args: str, log: Path, preexec_fn: Callable[[], None] | None = None,
                  **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """``gql-usage serve ...`` in its own process group, stopped (SIGTERM, then SIGKILL).
    ``env`` are whole variables, added to this process's environment without its
    ``GQL_USAGE_*`` ones."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GQL_USAGE_")}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gql_usage.cli", "serve", *args],
                                env={**environ, **env}, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=preexec_fn)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


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


@contextlib.contextmanager
def live_server(tmp_path: Path, *, open_files: int | None = None,
                **settings: str) -> Iterator[LiveServer]:
    """One worker on a fresh SQLite file; ``settings`` are ``GQL_USAGE_*`` variables
    (without the prefix); ``open_files`` limits the server's file descriptors."""
    port, log = free_port(), tmp_path / f"serve-{time.monotonic_ns()}.log"
    env = serve_env(database_url=f"sqlite://{tmp_path / 'live.sqlite3'}", **settings)

    def limit_files() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    with serve_process("--port", str(port), log=log, preexec_fn=limit_files, **env) as process:
        server = LiveServer(port, log, process)
        _wait_ready(server)
        yield server


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


class Server:
    """``gql-usage serve`` as a child process on 127.0.0.1 (killed on exit, whatever
    happens)."""

    def __init__(self, database_url: str, log_path: Path, **settings: str) -> None:
        self.database_url = database_url
        self.log_path = log_path
        #: More ``GQL_USAGE_*`` settings (names without the prefix).
        self.settings = settings
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = serve_env(database_url=self.database_url, retry_after_seconds=str(RETRY_AFTER),
                        log_format="text", **self.settings)
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "gql_usage.cli", "serve", "--host", "127.0.0.1",
                 "--port", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                cwd=ROOT)  # the package, even uninstalled

    async def start(self) -> None:
        """Start (again, on the same port) and wait until it answers (uvicorn accepts
        connections only once the lifespan start-up, which connects, is done)."""
        self.process = self._spawn()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        async with httpx.AsyncClient(base_url=self.base_url) as probe:
            while True:
                assert self.process.poll() is None, f"server exited:\n{self.log()}"
                assert loop.time() < deadline, f"server not ready after 30 s:\n{self.log()}"
                with contextlib.suppress(httpx.TransportError):
                    if (await probe.get("/healthz", timeout=2)).status_code == 200:
                        return
                await asyncio.sleep(0.05)

    def signal(self, signum: int) -> None:
        assert self.process is not None and self.process.poll() is None
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def log(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


@contextlib.asynccontextmanager
async def served(database_url: str, tmp_path: Path, **settings: str) -> AsyncIterator[Server]:
    server = Server(database_url, tmp_path / "server.log", **settings)
    try:
        await server.start()
        yield server
    finally:
        server.stop()
