"""``gql-usage serve`` as a child process that can be signalled, killed and restarted on
the same port (tests/system/test_faults.py, tests/integration/test_ingest_bounds.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from conftest import JWT_SECRET, SERVICE_TOKEN

#: Retry-After (seconds) of the served process's 503 answers.
RETRY_AFTER = 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """``gql-usage serve`` as a child process on 127.0.0.1 (killed on exit, whatever
    happens)."""

    def __init__(self, database_url: str, log_path: Path) -> None:
        self.database_url = database_url
        self.log_path = log_path
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GQL_USAGE_")}
        env.update(GQL_USAGE_DATABASE_URL=self.database_url, GQL_USAGE_JWT_SECRET=JWT_SECRET,
                   GQL_USAGE_SERVICE_TOKEN=SERVICE_TOKEN,
                   GQL_USAGE_RETRY_AFTER_SECONDS=str(RETRY_AFTER), GQL_USAGE_LOG_FORMAT="text")
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "gql_usage.cli", "serve", "--host", "127.0.0.1",
                 "--port", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                cwd=Path(__file__).resolve().parents[2])  # the package, even uninstalled

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
async def served(database_url: str, tmp_path: Path) -> AsyncIterator[Server]:
    server = Server(database_url, tmp_path / "server.log")
    try:
        await server.start()
        yield server
    finally:
        server.stop()
