"""A throwaway PostgreSQL primary with a streaming hot-standby replica, for the tests of
read routing (``tests/system/test_replica.py``).

Built like ``tests/support/pg_server.py`` (whose helpers it reuses): Debian binaries, fresh data
directories in one :func:`tempfile.mkdtemp` directory, ``trust`` authentication,
listening on ``127.0.0.1`` only, run as the ``postgres`` OS user when we are root. Then:

* the primary runs with ``wal_level=replica`` and WAL senders, and has a replication role
  ``replicator`` allowed from ``127.0.0.1`` by its own ``pg_hba.conf`` line,
* ``pg_basebackup -R -X stream`` copies it into a second data directory and writes
  ``standby.signal`` and ``primary_conninfo``,
* the replica starts on another free port, and the context manager yields once the
  primary reports it ``streaming``.

Usage::

    with start_primary_and_replica() as pair:
        primary = create_database(pair.primary_url, "app")      # replicates to the standby
        wait_for_replay(pair)
        replica = with_database(pair.replica_url, "app")
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from support.pg_server import (
    PG_OS_USER,
    PG_SUPERUSER,
    _as_pg_user,
    _is_root,
    _run,
    _stop,
    _tail,
    find_pg_bin,
    psql,
)
from support.ports import free_port

__all__ = ["ReplicaPair", "psql", "start_primary_and_replica", "wait_for_replay",
           "with_database"]

#: Role the replica connects as (``REPLICATION LOGIN``, trusted from 127.0.0.1 only).
REPLICATION_USER = "replicator"
_START_TIMEOUT_S = 60
_START_ATTEMPTS = 3
#: Longest wait for the replica to stream, or to replay up to a given primary position.
REPLICATION_TIMEOUT_S = 30.0

_COMMON_OPTIONS = (
    "-c listen_addresses=127.0.0.1",
    "-c fsync=off",
    "-c synchronous_commit=off",
    "-c max_connections=100",
    "-c timezone=UTC",
)
_PRIMARY_OPTIONS = ("-c wal_level=replica", "-c max_wal_senders=4", "-c wal_keep_size=64MB")
_REPLICA_OPTIONS = ("-c hot_standby=on", "-c hot_standby_feedback=on",
                    "-c wal_receiver_status_interval=1s")


@dataclass(frozen=True)
class ReplicaPair:
    """Superuser URLs (database ``postgres``) of the primary and of its replica."""

    primary_url: str
    replica_url: str


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def wait_for_replay(pair: ReplicaPair, timeout: float = REPLICATION_TIMEOUT_S) -> None:
    """Block until the replica has replayed everything the primary has written so far.

    The target is the WAL *insert* position: the primary runs with
    ``synchronous_commit=off``, so a commit that has returned may still sit in the WAL
    buffers, past ``pg_current_wal_lsn()`` (the position written out so far)."""
    target = psql(pair.primary_url, "SELECT pg_current_wal_insert_lsn()")
    deadline = time.monotonic() + timeout
    while True:
        if psql(pair.replica_url,
                f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn") == "t":
            return
        if time.monotonic() > deadline:
            state = psql(pair.replica_url, "SELECT pg_get_wal_replay_pause_state()")
            raise RuntimeError(f"replica did not replay up to {target} in {timeout} s "
                               f"(replay state: {state})")
        time.sleep(0.05)


def _start(pg_ctl: Path, data_dir: Path, tmp_dir: Path, options: tuple[str, ...]) -> int:
    """Start the cluster in ``data_dir`` on a free port (retrying a port taken meanwhile)."""
    log_file = tmp_dir / f"{data_dir.name}.log"
    last_error = ""
    for _attempt in range(_START_ATTEMPTS):
        port = free_port()
        server_opts = " ".join([*_COMMON_OPTIONS, *options, f"-p {port}",
                                f"-c unix_socket_directories={tmp_dir}"])
        start = _run(_as_pg_user([str(pg_ctl), "start", "-w", "-t", str(_START_TIMEOUT_S),
                                  "-D", str(data_dir), "-l", str(log_file), "-o", server_opts]),
                     cwd=tmp_dir, timeout=_START_TIMEOUT_S + 30)
        if start.returncode == 0:
            return port
        log_tail = _tail(log_file)
        last_error = (f"pg_ctl start of {data_dir.name} failed (exit {start.returncode}) on "
                      f"port {port}:\n{start.stdout}\n--- tail of {log_file} ---\n{log_tail}")
        if "could not bind" not in log_tail and "already in use" not in log_tail:
            break
        _stop(pg_ctl, data_dir, tmp_dir)
    raise RuntimeError(last_error)


def _wait_streaming(primary_url: str) -> None:
    deadline = time.monotonic() + REPLICATION_TIMEOUT_S
    query = "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
    while psql(primary_url, query) != "1":
        if time.monotonic() > deadline:
            raise RuntimeError(f"replica not streaming after {REPLICATION_TIMEOUT_S} s")
        time.sleep(0.1)


@contextlib.contextmanager
def start_primary_and_replica() -> Iterator[ReplicaPair]:
    """Run a primary and its streaming replica for the duration of the ``with`` block.

    Raises ``RuntimeError`` with the command output or server log when a step fails. On
    exit both servers are stopped (``-m immediate``) and the directory is removed.
    """
    bin_dir = find_pg_bin()
    pg_ctl = bin_dir / "pg_ctl"
    tmp_dir = Path(tempfile.mkdtemp(prefix="gql_usage_pg_replica_"))
    primary_dir, replica_dir = tmp_dir / "primary", tmp_dir / "replica"
    running: list[Path] = []
    try:
        if _is_root():
            shutil.chown(tmp_dir, user=PG_OS_USER, group=None)
        init = _run(_as_pg_user([str(bin_dir / "initdb"), "-D", str(primary_dir),
                                 "--auth=trust", "-U", PG_SUPERUSER, "--encoding=UTF8",
                                 "--locale=C", "--no-sync"]), cwd=tmp_dir)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed (exit {init.returncode}):\n{init.stdout}")
        hba = primary_dir / "pg_hba.conf"  # first matching line wins: put ours first
        hba.write_text(f"host replication {REPLICATION_USER} 127.0.0.1/32 trust\n"
                       + hba.read_text())

        primary_port = _start(pg_ctl, primary_dir, tmp_dir, _PRIMARY_OPTIONS)
        running.append(primary_dir)
        primary_url = f"postgres://{PG_SUPERUSER}@127.0.0.1:{primary_port}/postgres"
        psql(primary_url, f"CREATE ROLE {REPLICATION_USER} WITH REPLICATION LOGIN")

        backup = _run(_as_pg_user([str(bin_dir / "pg_basebackup"), "-h", "127.0.0.1",
                                   "-p", str(primary_port), "-U", REPLICATION_USER,
                                   "-D", str(replica_dir), "-R", "-X", "stream",
                                   "--checkpoint=fast", "--no-sync", "-w"]),
                      cwd=tmp_dir, timeout=120)
        if backup.returncode != 0:
            raise RuntimeError(f"pg_basebackup failed (exit {backup.returncode}):\n"
                               f"{backup.stdout}")
        replica_port = _start(pg_ctl, replica_dir, tmp_dir, _REPLICA_OPTIONS)
        running.append(replica_dir)
        _wait_streaming(primary_url)
        yield ReplicaPair(primary_url=primary_url,
                          replica_url=f"postgres://{PG_SUPERUSER}@127.0.0.1:{replica_port}"
                                      "/postgres")
    finally:
        for data_dir in reversed(running):
            _stop(pg_ctl, data_dir, tmp_dir)
        shutil.rmtree(tmp_dir, ignore_errors=True)
