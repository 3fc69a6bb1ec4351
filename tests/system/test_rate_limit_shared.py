"""The rate limit across processes (``gql_usage/graphql/limits/rate_limit.py``, ``RateLimiter``).

With ``GQL_USAGE_RATE_LIMIT_STORAGE_URL`` pointing at Redis, every worker process charges
one budget per viewer; with the in-memory default each process has its own, so N workers
grant N budgets. Shown on ``gql-usage serve --workers 2`` with a real ``redis-server``
(``tests/support/redis_server.py``), each request on a new connection, and the worker that served
it read from the kernel (which process holds the server end of the connection).

Database-independent (the budgets never touch the database): the server runs on SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from pydantic import ValidationError
from support.config import JWT_SECRET, SERVICE_TOKEN, make_settings
from support.helpers import make_account, token
from support.ports import free_port as _free_port
from support.redis_server import RedisServer, find_redis_server, start_redis
from support.serve import serve_process

import gql_usage.graphql.limits.rate_limit as limits_module
from gql_usage.app import create_app
from gql_usage.graphql.limits.rate_limit import RateLimiter
from gql_usage.settings import Settings

#: Points per viewer per minute in these tests.
BUDGET = 30
#: ``viewer`` 1 + ``rateLimit`` 0 (free).
QUERY = "{ viewer { id } rateLimit { used remaining } }"
SEQUENTIAL, CONCURRENT = 20, 25
START_TIMEOUT_S = 60

needs_redis = pytest.mark.skipif(find_redis_server() is None,
                                 reason="redis-server not installed (apt-get install "
                                 "redis-server): the shared budget needs a real Redis")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    if find_redis_server() is None:
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    with start_redis() as server:
        yield server


# --- gql-usage serve --workers 2 ------------------------------------------------------------

def _serve(port: int, log: Path, **env: str) -> contextlib.AbstractContextManager[
        subprocess.Popen[bytes]]:
    return serve_process("--workers", "2", "--host", "127.0.0.1", "--port", str(port),
                         log=log, **env)


async def _wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    output = log.read_text(errors="replace")  # noqa: ASYNC240 - a failing test's last act
    raise AssertionError(f"serve not ready in {START_TIMEOUT_S} s:\n{output}")


def _workers(pid: int, port: int) -> set[int]:
    """The worker processes of ``serve`` (pid): its children holding the listening socket
    (not multiprocessing's resource tracker)."""
    children = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat.rpartition(")")[2].split()[1]) == pid:
                    children.add(int(entry))
    listening = _sockets(f"0100007F:{port:04X}", "00000000:0000")
    return {child for child in children if _holder({child}, listening)}


def _sockets(local: str, remote: str) -> set[str]:
    """``socket:[inode]`` of the TCP sockets local -> remote (hex, as in /proc/net/tcp)."""
    rows = (line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:])
    return {f"socket:[{row[9]}]" for row in rows
            if row[1] == local and row[2] == remote and row[9] != "0"}


def _holder(pids: set[int], sockets: set[str]) -> int | None:
    """The first of ``pids`` with one of ``sockets`` open."""
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") in sockets:
                        return pid
    return None


def _server_end_owner(server_port: int, client_port: int, pids: set[int]) -> int | None:
    """The process among ``pids`` holding the server end of 127.0.0.1:client_port's
    connection to ``server_port``, once a worker has accepted it."""
    return _holder(pids, _sockets(f"0100007F:{server_port:04X}",
                                  f"0100007F:{client_port:04X}"))


async def _connect_to(worker: int, port: int, workers: set[int]) -> tuple[
        asyncio.StreamReader, asyncio.StreamWriter]:
    """A new connection that ``worker`` accepted (the kernel hands each new connection to
    whichever worker accepts first: connections to the other one are closed unused)."""
    for _attempt in range(200):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client_port = writer.get_extra_info("sockname")[1]
        owner = None
        deadline = time.monotonic() + 10
        while owner is None and time.monotonic() < deadline:
            owner = _server_end_owner(port, client_port, workers)
            if owner is None:
                await asyncio.sleep(0.005)
        if owner == worker:
            return reader, writer
        writer.close()
        await writer.wait_closed()
    raise AssertionError(f"worker {worker} accepted none of 200 new connections")


class _Answer:
    def __init__(self, worker: int, status: int, headers: dict[str, str],
                 body: bytes) -> None:
        self.worker, self.status, self.headers = worker, status, headers
        self.body: dict[str, Any] = json.loads(body)


async def _ask(worker: int, port: int, workers: set[int]) -> _Answer:
    """``QUERY`` on a new connection served by ``worker`` (HTTP/1.1, Connection: close)."""
    reader, writer = await _connect_to(worker, port, workers)
    body = json.dumps({"query": QUERY}).encode()
    writer.write(b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/json\r\nConnection: close\r\n"
                 + f"Authorization: Bearer {token('admin', 'acme')}\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), timeout=30)
    writer.close()
    await writer.wait_closed()
    head, _, payload = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip()
               for k, _, v in (line.partition(":") for line in lines)}
    assert int(headers["content-length"]) == len(payload), raw
    return _Answer(worker, int(status_line.split()[1]), headers, payload)


@contextlib.asynccontextmanager
async def _two_workers(tmp_path: Path, storage_url: str) -> AsyncIterator[
        tuple[int, set[int]]]:
    port, log = _free_port(), tmp_path / "serve.log"
    with _serve(port, log, GQL_USAGE_DATABASE_URL=f"sqlite://{tmp_path / 'db.sqlite3'}",
                GQL_USAGE_JWT_SECRET=JWT_SECRET, GQL_USAGE_SERVICE_TOKEN=SERVICE_TOKEN,
                GQL_USAGE_RATE_LIMIT_POINTS=str(BUDGET),
                GQL_USAGE_RATE_LIMIT_STORAGE_URL=storage_url) as proc:
        base = f"http://127.0.0.1:{port}"
        await _wait_ready(base, proc, log)
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            await make_account(client, "acme", users=[("admin", "ADMIN")])
        yield port, _workers(proc.pid, port)


@pytest.mark.parametrize("storage", ["redis", "memory"])
async def test_two_workers_share_one_budget_only_in_redis(
        storage: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Redis: the points accepted across both workers are exactly one budget, charged in
    one sequence (1, 2, 3, ... whichever worker serves), then RATE_LIMITED everywhere.
    Memory (the default): each worker grants its own budget, so twice as much passes.
    Requests alternate between the two workers, each on a new connection."""
    url = request.getfixturevalue("redis_server").url if storage == "redis" else "memory://"
    if storage == "redis":  # the budgets of an earlier test on the same Redis are gone
        with redis.Redis.from_url(url) as client:
            client.flushdb()
    async with _two_workers(tmp_path, url) as (port, workers):
        order = sorted(workers)
        assert len(order) == 2, workers
        answers = [await _ask(order[i % 2], port, workers) for i in range(SEQUENTIAL)]
        gate = asyncio.Semaphore(4)

        async def bounded(worker: int) -> _Answer:
            async with gate:
                return await _ask(worker, port, workers)

        answers += await asyncio.gather(*(bounded(order[i % 2]) for i in range(CONCURRENT)))

    accepted = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status != 200]
    assert all("errors" not in a.body for a in accepted)
    if storage == "memory":
        # Each worker refuses only after its own BUDGET: 23 + 22 requests all pass.
        assert len(accepted) == SEQUENTIAL + CONCURRENT > BUDGET
        assert [a.body["data"]["rateLimit"]["used"] for a in answers[:SEQUENTIAL]] == [
            1 + i // 2 for i in range(SEQUENTIAL)]  # 1, 1, 2, 2, ...: two budgets
        return

    assert len(accepted) == BUDGET  # each costs 1 point
    # The first SEQUENTIAL requests, alternating between the workers, count one budget.
    assert [a.body["data"]["rateLimit"]["used"] for a in answers[:SEQUENTIAL]] == list(
        range(1, SEQUENTIAL + 1))
    assert len(refused) == SEQUENTIAL + CONCURRENT - BUDGET
    assert {a.worker for a in refused} == workers  # both workers refuse
    reset_at = {a.headers["x-ratelimit-reset"] for a in answers}
    for answer in refused:
        assert answer.status == 429
        assert answer.body["data"] is None
        (error,) = answer.body["errors"]
        extensions = dict(error["extensions"])
        reset = extensions.pop("resetAt")
        assert extensions == {"code": "RATE_LIMITED", "cost": 1, "limit": BUDGET,
                              "remaining": 0}
        assert reset.endswith("+00:00")
        assert answer.headers["x-ratelimit-remaining"] == "0"
        assert 1 <= int(answer.headers["retry-after"]) <= 60
    # One window, shared: its end (from Redis's TTL, whole seconds) agrees within a second.
    assert max(map(int, reset_at)) - min(map(int, reset_at)) <= 1, reset_at


# --- Redis outage: fail open to process memory -------------------------------------------

KEY = (7, 8)


@needs_redis
async def test_a_redis_outage_fails_open_to_process_memory_and_recovers(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(limits_module, "STORE_RETRY_SECONDS", 0.0)  # retry on every call
    caplog.set_level(logging.INFO, logger="gql_usage.rate_limit")
    with start_redis() as server:
        one = RateLimiter(10, storage_url=server.url)
        two = RateLimiter(10, storage_url=server.url)  # another process, in effect
        try:
            assert await one.check() and await two.check()
            assert (await one.charge(KEY, 4))[1].used == 4
            assert (await two.charge(KEY, 4))[1].used == 8  # the same budget
            charged, budget = await two.charge(KEY, 3)
            assert not charged and (budget.used, budget.remaining) == (8, 2)
            assert (await one.peek(KEY)).used == 8  # the refusal was not charged
            assert caplog.records == []

            server.stop()
            started = time.monotonic()
            charged, budget = await one.charge(KEY, 3)
            assert charged and budget.used == 3  # this process's own memory
            charged, budget = await one.charge(KEY, 7)
            assert charged and budget.used == 10
            assert not (await one.charge(KEY, 1))[0]  # still limited, per process
            assert time.monotonic() - started < 5  # a refused connection fails fast
            warnings = [(r.levelname, r.getMessage()) for r in caplog.records]
            assert len(warnings) == 1, warnings  # once per outage, not per request
            assert warnings[0][0] == "WARNING"
            assert f"rate-limit store {server.url} unreachable" in warnings[0][1]
            assert not await two.check()

            server.start()  # the same port, empty (no persistence)
            caplog.clear()
            charged, budget = await one.charge(KEY, 5)
            assert charged and budget.used == 5  # shared again (a fresh Redis)
            assert (await two.peek(KEY)).used == 5
            assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
                ("INFO", f"rate-limit store {server.url} reachable again; budgets shared")]
        finally:
            await one.close()
            await two.close()


async def test_an_unreachable_redis_still_serves_graphql(db_url: str,
                                                         caplog: pytest.LogCaptureFixture):
    """Nothing listens on the port: the API answers as usual, limited per process, and
    the warning does not give the password away."""
    caplog.set_level(logging.WARNING, logger="gql_usage.rate_limit")
    port = _free_port()
    url = f"redis://admin:s3cret@127.0.0.1:{port}/0"
    app = create_app(make_settings(db_url, rate_limit_points=BUDGET,
                                   rate_limit_storage_url=url), manage_db=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as client:
        await make_account(client, "acme", users=[("admin", "ADMIN")])
        response = await client.post("/graphql", json={"query": QUERY}, headers={
            "Authorization": f"Bearer {token('admin', 'acme')}"})
    assert response.status_code == 200
    assert response.json()["data"]["rateLimit"] == {"used": 1, "remaining": BUDGET - 1}
    assert response.headers["X-RateLimit-Remaining"] == str(BUDGET - 1)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith(f"rate-limit store redis://admin:***@127.0.0.1:{port}/0 "
                              "unreachable (")
    assert "s3cret" not in warning
    assert warning.endswith("); counting budgets in this process's memory, retrying every 5 s")


def test_the_storage_url_is_memory_or_redis():
    assert Settings.model_construct().rate_limit_storage_url == "memory://"
    for good in ("memory://", "redis://127.0.0.1:6379/0", "rediss://cache:6380/1",
                 "unix:///run/redis.sock"):
        assert Settings(rate_limit_storage_url=good).rate_limit_storage_url == good
    for bad in ("memcached://127.0.0.1:11211", "127.0.0.1:6379", ""):
        with pytest.raises(ValidationError) as info:
            Settings(rate_limit_storage_url=bad)
        assert "rate_limit_storage_url" in str(info.value)
        assert "is neither memory:// nor a Redis URL such as redis://127.0.0.1:6379/0" in \
            str(info.value)
