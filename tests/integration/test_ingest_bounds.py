"""Ingestion work is bounded by the batch cap, whatever the body: a body of millions of
tiny items or lines is refused (413, ``BATCH_TOO_LARGE``, naming the cap) after counting
at most cap + 1 of them, before any event is validated; the answer to a batch full of bad
events lists a bounded number of reasons but every rejected position, and keeps every
valid event."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from support.config import make_settings
from support.helpers import SERVICE, event, make_account
from support.serve import served

from gql_usage.app import create_app
from gql_usage.ingest.results import MAX_LISTED_REJECTIONS
from gql_usage.storage.db import connection

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
MIB = 1024 * 1024
NDJSON = {**SERVICE, "Content-Type": "application/x-ndjson"}
JSON = {**SERVICE, "Content-Type": "application/json"}


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


async def _timed_while_probing(client: httpx.AsyncClient, body: bytes,
                               headers: dict[str, str]) -> tuple[httpx.Response, float, float]:
    """Post ``body``; meanwhile ``/healthz`` is asked again and again. Returns the answer,
    its time, and the slowest health answer."""
    done = asyncio.Event()
    slowest = 0.0

    async def probe() -> None:
        nonlocal slowest
        while not done.is_set():
            started = time.perf_counter()
            r = await client.get("/healthz", timeout=30)
            assert r.status_code == 200
            slowest = max(slowest, time.perf_counter() - started)
            await asyncio.sleep(0.02)

    prober = asyncio.create_task(probe())
    started = time.perf_counter()
    try:
        response = await client.post("/v1/usage-events", content=body, headers=headers,
                                     timeout=120)
    finally:
        elapsed = time.perf_counter() - started
        done.set()
    await prober
    return response, elapsed, slowest


async def test_millions_of_items_or_lines_are_refused_fast_in_bounded_memory(db_url, tmp_path):
    """A real server process (its own RSS): a 10 MiB body of ``{}`` items (3.5 M items)
    drove the old server to 10.5 GB and stalled ``/healthz`` for 45 s; 2.5 M NDJSON lines
    of ``x`` stalled it 24 s. Now each is refused within seconds, the process's peak RSS
    grows by tens of MiB at most, and ``/healthz`` answers throughout."""
    items = (10 * MIB - 2) // 3
    array = b"[" + b",".join([b"{}"] * items) + b"]"
    assert len(array) <= 10 * MIB
    lines = b"x\n" * 2_500_000
    async with served(db_url, tmp_path) as server, httpx.AsyncClient(
            base_url=server.base_url) as client:
        assert server.process is not None
        pid = server.process.pid
        # Warm up: the first ingestion imports and builds what later ones reuse.
        warm = await client.post("/v1/usage-events", content=b"[{}]", headers=JSON)
        assert warm.status_code == 200 and warm.json()["rejectedCount"] == 1
        spaced = b" \n" + array[:-1] + b"]"  # not starting with "[": counted all the same
        # The same millions of values inside one event, or one NDJSON line: few items,
        # but each value would be a Python object (refused by counting values).
        inner = b"[" + b",".join([b"{}"] * (items - 20)) + b"]"  # room for the event
        nested = b'[{"id": "e1", "pad": ' + inner + b"}]"
        nested_line = b'{"id": "e1", "pad": ' + inner + b"}\n"
        for body, headers in ((array, JSON), (spaced, JSON), (lines, NDJSON),
                              (nested, JSON), (nested_line, NDJSON)):
            # Reset the peak RSS to the current RSS (Linux: 5 > clear_refs).
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # noqa: ASYNC240
            before = _status_kib(pid, "VmHWM")
            response, seconds, slowest_health = await _timed_while_probing(client, body, headers)
            grown_mib = (_status_kib(pid, "VmHWM") - before) / 1024
            answer = response.json()
            assert response.status_code == 413, answer
            assert answer["code"] == "BATCH_TOO_LARGE" and answer["maxEvents"] == 10_000
            assert "10000" in answer["error"] and "GQL_USAGE_MAX_BATCH_EVENTS" in answer["error"]
            print(f"{headers['Content-Type']}: {len(body) / MIB:.1f} MiB answered in "
                  f"{seconds:.2f} s, peak RSS +{grown_mib:.1f} MiB, slowest /healthz "
                  f"{slowest_health:.2f} s")
            assert seconds < 5, seconds
            assert slowest_health < 5, slowest_health
            assert grown_mib < 80, grown_mib


def _app_client(db_url: str, **settings: Any) -> httpx.AsyncClient:
    app = create_app(make_settings(db_url, **settings), manage_db=False)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def _good(i: int) -> dict[str, Any]:
    # Commas, colons and brackets inside strings: the count must not take them as items.
    return event(f"ev,{i}:[{{", "acme", "k1", "admin", "/v2/person,x", "api", i + 1, T0)


async def test_the_cap_counts_items_and_lines_exactly(db_url):
    """Exactly ``max_batch_events`` events pass whatever the layout (white space, commas
    and brackets inside strings, blank NDJSON lines, CRLF); one more is refused before
    anything is stored, in every layout."""
    cap = 5
    async with _app_client(db_url, max_batch_events=cap) as client:
        await make_account(client, "acme", users=[("admin", "ADMIN")], keys=["k1"])
        events = [_good(i) for i in range(cap + 1)]
        layouts = {
            "compact": (lambda es: json.dumps(es, separators=(",", ":")).encode(), JSON),
            "spaced": (lambda es: json.dumps(es, indent=2).encode(), JSON),
            "leading space": (lambda es: b"  \n" + json.dumps(es).encode(), JSON),
            "ndjson": (lambda es: b"".join(json.dumps(e).encode() + b"\n" for e in es), NDJSON),
            "ndjson blank lines, CRLF": (lambda es: b"\r\n\r\n".join(
                json.dumps(e).encode() for e in es) + b"\r\n  \r\n", NDJSON),
        }
        for name, (render, headers) in layouts.items():
            over = await client.post("/v1/usage-events", content=render(events), headers=headers)
            assert over.status_code == 413, (name, over.text)
            assert over.json()["code"] == "BATCH_TOO_LARGE" and over.json()["maxEvents"] == cap
            _, rows = await connection().execute_query("SELECT COUNT(*) FROM usage_event")
            assert rows[0][0] == 0, name
        for name, (render, headers) in layouts.items():
            ok = await client.post("/v1/usage-events", content=render(events[:cap]),
                                   headers=headers)
            assert ok.status_code == 200, (name, ok.text)
            first = name == "compact"
            assert ok.json() == {"accepted": cap if first else 0,
                                 "duplicates": 0 if first else cap, "rejected": []}, name
        _, rows = await connection().execute_query(
            "SELECT COUNT(*), SUM(credits) FROM usage_event")
        assert tuple(rows[0]) == (cap, sum(range(1, cap + 1)))


async def test_many_rejections_list_some_reasons_and_every_position(db_url):
    """A full batch of which most events are bad: every valid event is stored, at most
    ``MAX_LISTED_REJECTIONS`` reasons are listed (lowest positions first), and
    ``rejectedIndexes`` names every rejected position, so the producer can tell exactly
    which events to fix."""
    async with _app_client(db_url) as client:
        await make_account(client, "acme", users=[("admin", "ADMIN")], keys=["k1"])
        n = 10_000
        good_positions = set(range(0, n, 97))
        batch: list[Any] = []
        for i in range(n):
            if i in good_positions:
                batch.append(event(f"ok-{i}", "acme", "k1", "admin", "/v2/person", "api", 2, T0))
            elif i % 3 == 0:
                batch.append({})
            elif i % 3 == 1:
                batch.append(event(f"bad-{i}", "ghost", "k1", "admin", "/v2/person", "api", 1, T0))
            else:
                batch.append("not an event")
        for body, headers in ((json.dumps(batch).encode(), JSON),
                              (b"\n".join(json.dumps(e).encode() for e in batch), NDJSON)):
            started = time.perf_counter()
            r = await client.post("/v1/usage-events", content=body, headers=headers)
            seconds = time.perf_counter() - started
            answer = r.json()
            assert r.status_code == 200, answer
            bad = [i for i in range(n) if i not in good_positions]
            assert answer["accepted"] + answer["duplicates"] == len(good_positions)
            assert answer["rejectedCount"] == len(bad) == n - len(good_positions)
            assert answer["rejectedIndexes"] == bad
            assert [x["index"] for x in answer["rejected"]] == bad[:MAX_LISTED_REJECTIONS]
            reasons = {x["index"]: x["reason"] for x in answer["rejected"]}
            assert "id: is required" in reasons[3] and "unknown account" in reasons[1]
            assert "must be a JSON object" in reasons[2]
            assert seconds < 20, seconds
        _, rows = await connection().execute_query(
            "SELECT COUNT(*), SUM(credits) FROM usage_event")
        assert tuple(rows[0]) == (len(good_positions), 2 * len(good_positions))
