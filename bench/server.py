"""Run gql_usage as a real server process for the benchmarks, and watch its memory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
SERVICE_TOKEN = "bench-service-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """Resident memory of ``pid`` and its children (uvicorn workers), in KiB."""
    total = 0
    pids = [pid]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
    return total


class Server:
    """``gql-usage serve`` on 127.0.0.1 in a child process; ``peak_rss_mib`` sampled."""

    def __init__(self, database_url: str, *, workers: int = 1, env: dict[str, str] | None = None,
                 source: Path | None = None) -> None:
        """``source``: a directory holding the ``gql_usage`` package to run (its working
        directory and ``PYTHONPATH``: ``python -m`` puts the working directory first on
        the path); default: the installed package, from the current directory."""
        self.source = source
        self.database_url = database_url
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = env or {}
        self.peak_rss_kib = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkstemp(prefix="gql_usage_bench_", suffix=".log")[1])

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Server]:
        env = {**os.environ,
               "GQL_USAGE_DATABASE_URL": self.database_url,
               "GQL_USAGE_JWT_SECRET": SECRET,
               "GQL_USAGE_SERVICE_TOKEN": SERVICE_TOKEN,
               # One viewer sends every benchmark query: lift the per-viewer budget.
               "GQL_USAGE_RATE_LIMIT_POINTS": str(10**12),
               **self.extra_env}
        if self.source is not None:
            env["PYTHONPATH"] = str(self.source)
        cmd = [sys.executable, "-m", "gql_usage.cli", "serve", "--host", "127.0.0.1",
               "--port", str(self.port)]
        if self.workers != 1:
            cmd += ["--workers", str(self.workers)]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - started once, not awaited
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.source)
        sampler = asyncio.create_task(self._sample())
        try:
            await self._wait_ready()
            yield self
        finally:
            sampler.cancel()
            self.stop()

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + 120
        async with httpx.AsyncClient(base_url=self.url) as client:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited:\n{self.log.read_text()[-4000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"server not ready in 120 s:\n{self.log.read_text()[-4000:]}")

    async def _sample(self) -> None:
        while True:
            if self.proc is not None:
                self.peak_rss_kib = max(self.peak_rss_kib, rss_kib(self.proc.pid))
            await asyncio.sleep(0.25)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.peak_rss_kib = max(self.peak_rss_kib, rss_kib(self.proc.pid, "VmHWM"))
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
