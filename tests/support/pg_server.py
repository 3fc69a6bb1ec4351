"""Throwaway PostgreSQL servers for the test suite.

The tests need a real PostgreSQL (the ORM runs on asyncpg), but they must not
depend on a server that somebody happened to leave running.  This module boots
a private, disposable cluster from the Debian PostgreSQL binaries:

* a fresh data directory inside a :func:`tempfile.mkdtemp` directory,
* ``trust`` authentication for the ``postgres`` superuser (no password),
* listening only on ``127.0.0.1`` on a free port, with its unix socket inside
  the temporary directory (so it never collides with a system server),
* durability switched off (``fsync``, ``synchronous_commit``,
  ``full_page_writes``) because the data is thrown away anyway.

PostgreSQL refuses to run as root, so when the tests run as root (CI
containers) every server-side command is executed as the ``postgres`` OS user
through ``runuser`` (or ``su`` if ``runuser`` is missing).  When not root, the
commands run as the current user.

Usage::

    with start_postgres() as base_url:
        url = create_database(base_url, "test_abc")
        # Tortoise.init(db_url=url, ...)

``base_url`` looks like ``postgres://postgres@127.0.0.1:PORT/postgres``; Tortoise
ORM maps the missing password to ``None``, which is what asyncpg expects for
``trust`` authentication.

Set ``GQL_USAGE_PG_BIN`` to a directory containing ``initdb`` and ``pg_ctl`` to
use a PostgreSQL other than the newest ``/usr/lib/postgresql/*/bin``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from support.ports import free_port

__all__ = ["create_database", "drop_database", "find_pg_bin", "psql", "start_postgres"]

#: Environment variable naming a directory with ``initdb``/``pg_ctl``/``postgres``.
PG_BIN_ENV = "GQL_USAGE_PG_BIN"
#: Glob for the Debian/Ubuntu per-version binary directories.
DEBIAN_PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
#: OS user that owns and runs the cluster when we are root.
PG_OS_USER = "postgres"
#: Database superuser created by ``initdb``.
PG_SUPERUSER = "postgres"
#: Binaries that must be present in the chosen directory.
REQUIRED_BINARIES = ("initdb", "pg_ctl", "postgres")

_START_TIMEOUT_S = 60
_START_ATTEMPTS = 3
_LOG_TAIL_LINES = 40
_DB_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _version_key(bin_dir: str) -> tuple[int, ...]:
    """Sort key for ``/usr/lib/postgresql/<version>/bin`` (numeric, e.g. 9.6 < 15 < 16)."""
    version = Path(bin_dir).parent.name
    return tuple(int(part) for part in re.findall(r"\d+", version)) or (-1,)


def _missing_binaries(bin_dir: Path) -> list[str]:
    return [
        name
        for name in REQUIRED_BINARIES
        if not (bin_dir / name).is_file() or not os.access(bin_dir / name, os.X_OK)
    ]


def find_pg_bin() -> Path:
    """Return the directory holding the PostgreSQL server binaries.

    ``$GQL_USAGE_PG_BIN`` wins when set; otherwise the newest
    ``/usr/lib/postgresql/<version>/bin`` that has ``initdb``, ``pg_ctl`` and
    ``postgres``.

    Raises:
        RuntimeError: naming what is missing and how to fix it.
    """
    override = os.environ.get(PG_BIN_ENV)
    if override:
        bin_dir = Path(override)
        missing = _missing_binaries(bin_dir)
        if missing:
            raise RuntimeError(
                f"${PG_BIN_ENV}={override!r} does not contain executable {', '.join(missing)}"
            )
        return bin_dir

    candidates = sorted(glob.glob(DEBIAN_PG_BIN_GLOB), key=_version_key, reverse=True)
    for candidate in candidates:
        if not _missing_binaries(Path(candidate)):
            return Path(candidate)
    raise RuntimeError(
        "PostgreSQL server binaries not found: no directory matching "
        f"{DEBIAN_PG_BIN_GLOB} contains {', '.join(REQUIRED_BINARIES)} "
        f"(looked at: {candidates or 'nothing'}). Install them with "
        "`apt-get install postgresql`, or point "
        f"${PG_BIN_ENV} at a directory that has them."
    )


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _as_pg_user(argv: Sequence[str]) -> list[str]:
    """Wrap ``argv`` so that it runs as the ``postgres`` OS user when we are root."""
    if not _is_root():
        return list(argv)
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", PG_OS_USER, "--", *argv]
    su = shutil.which("su")
    if su:
        return [su, PG_OS_USER, "-s", "/bin/sh", "-c", shlex.join(argv)]
    raise RuntimeError(
        "running as root, but neither `runuser` nor `su` is available to drop "
        f"privileges to the {PG_OS_USER!r} user (PostgreSQL refuses to run as root)"
    )


def _run(
    argv: Sequence[str], *, cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a command (never interactive), capturing combined output as text."""
    return subprocess.run(
        list(argv),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        env=_clean_env(),
        check=False,
    )


def _clean_env() -> dict[str, str]:
    """Environment without libpq/PG* variables that could redirect our commands."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    env.pop("LANG", None)
    return env


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<could not read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def _postmaster_pid(data_dir: Path) -> int | None:
    """PID recorded in ``postmaster.pid`` (first line), if the file exists."""
    try:
        first_line = (data_dir / "postmaster.pid").read_text().splitlines()[0]
        return int(first_line.strip())
    except (OSError, IndexError, ValueError):
        return None


def _stop(pg_ctl: Path, data_dir: Path, tmp_dir: Path) -> None:
    """Immediate shutdown; falls back to SIGQUIT on the postmaster we started."""
    result = None
    with contextlib.suppress(subprocess.TimeoutExpired):
        result = _run(
            _as_pg_user([str(pg_ctl), "stop", "-D", str(data_dir), "-m", "immediate", "-w"]),
            cwd=tmp_dir,
            timeout=_START_TIMEOUT_S,
        )
    if result is not None and result.returncode == 0:
        return
    pid = _postmaster_pid(data_dir)
    if pid is not None:
        # SIGQUIT is PostgreSQL's "immediate shutdown" signal.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGQUIT)


@contextlib.contextmanager
def start_postgres() -> Iterator[str]:
    """Run a disposable PostgreSQL cluster for the duration of the ``with`` block.

    Yields:
        A Tortoise/asyncpg URL for the ``postgres`` database of the new cluster,
        ``postgres://postgres@127.0.0.1:<port>/postgres`` (no password: the
        cluster uses ``trust`` authentication).

    Raises:
        RuntimeError: if the binaries are missing, ``initdb`` fails, or the
            server does not start (the message contains the server log tail).

    On exit the server is stopped with ``pg_ctl stop -m immediate`` and the
    temporary directory (data directory, socket, log) is removed.
    """
    bin_dir = find_pg_bin()
    initdb, pg_ctl = bin_dir / "initdb", bin_dir / "pg_ctl"

    tmp_dir = Path(tempfile.mkdtemp(prefix="gql_usage_pg_"))
    data_dir = tmp_dir / "data"
    log_file = tmp_dir / "postgres.log"
    started = False
    try:
        if _is_root():
            shutil.chown(tmp_dir, user=PG_OS_USER, group=None)

        init = _run(
            _as_pg_user(
                [
                    str(initdb),
                    "-D",
                    str(data_dir),
                    "--auth=trust",
                    "-U",
                    PG_SUPERUSER,
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ]
            ),
            cwd=tmp_dir,
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed (exit {init.returncode}):\n{init.stdout}")

        port = 0
        last_error = ""
        for _attempt in range(_START_ATTEMPTS):
            port = free_port()
            server_opts = " ".join(
                [
                    "-c listen_addresses=127.0.0.1",
                    f"-p {port}",
                    f"-c unix_socket_directories={tmp_dir}",
                    "-c fsync=off",
                    "-c synchronous_commit=off",
                    "-c full_page_writes=off",
                    "-c max_connections=200",
                    "-c timezone=UTC",
                ]
            )
            start = _run(
                _as_pg_user(
                    [
                        str(pg_ctl),
                        "start",
                        "-w",
                        "-t",
                        str(_START_TIMEOUT_S),
                        "-D",
                        str(data_dir),
                        "-l",
                        str(log_file),
                        "-o",
                        server_opts,
                    ]
                ),
                cwd=tmp_dir,
                timeout=_START_TIMEOUT_S + 30,
            )
            if start.returncode == 0:
                started = True
                break
            log_tail = _tail(log_file)
            last_error = (
                f"pg_ctl start failed (exit {start.returncode}) on port {port}:\n"
                f"{start.stdout}\n--- tail of {log_file} ---\n{log_tail}"
            )
            # Another process grabbed the port between probing and binding: retry.
            if "could not bind" not in log_tail and "already in use" not in log_tail:
                break
            _stop(pg_ctl, data_dir, tmp_dir)
        if not started:
            raise RuntimeError(last_error)

        yield f"postgres://{PG_SUPERUSER}@127.0.0.1:{port}/postgres"
    finally:
        if started or data_dir.joinpath("postmaster.pid").exists():
            _stop(pg_ctl, data_dir, tmp_dir)
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _psql() -> str:
    """Path to ``psql``: next to the server binaries, else ``/usr/bin/psql`` or $PATH."""
    with contextlib.suppress(RuntimeError):
        candidate = find_pg_bin() / "psql"
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("psql") or ("/usr/bin/psql" if Path("/usr/bin/psql").exists() else None)
    if not found:
        raise RuntimeError("psql not found (looked next to the PostgreSQL binaries and on $PATH)")
    return found


def create_database(base_url: str, name: str, template: str | None = None) -> str:
    """Create an empty database ``name`` on the server of ``base_url``.

    Runs ``psql`` in a subprocess (not asyncpg), so it is safe to call from
    synchronous code and from inside a running event loop alike (it blocks the
    loop briefly, which is fine for test setup).

    Args:
        base_url: a URL yielded by :func:`start_postgres`.
        name: a plain SQL identifier (letters, digits, underscore; at most 63
            characters); it is created exactly as given, case included.

    Returns:
        ``base_url`` with its path replaced by ``/<name>``.

    Raises:
        ValueError: if ``name`` is not a plain identifier.
        RuntimeError: if ``CREATE DATABASE`` fails (e.g. it already exists).
    """
    if not _DB_NAME_RE.fullmatch(name):
        raise ValueError(f"invalid database name {name!r}: use [A-Za-z_][A-Za-z0-9_]{{0,62}}")
    statement = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
    psql(base_url, statement)
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def psql(url: str, sql: str) -> str:
    """Run one statement with ``psql`` on the database of ``url`` and return its unaligned,
    tuples-only output."""
    parts = urlsplit(url)
    # libpq does not understand Tortoise's query parameters (e.g. ?minsize=...).
    libpq_url = urlunsplit(("postgresql", parts.netloc, parts.path or "/postgres", "", ""))
    result = subprocess.run(
        [_psql(), "--no-psqlrc", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", libpq_url,
         "-c", sql],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        env={**_clean_env(), "PGCONNECT_TIMEOUT": "10"}, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"psql {sql!r} on {url} failed (exit {result.returncode}): "
                           f"{result.stderr.strip()}")
    return result.stdout.strip()


def drop_database(base_url: str, name: str) -> None:
    """Drop database ``name`` (if it exists) on the server of ``base_url``, closing its
    connections first (``WITH (FORCE)``)."""
    if not _DB_NAME_RE.fullmatch(name):
        raise ValueError(f"invalid database name {name!r}")
    psql(base_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- A cluster that can be crashed and restarted (tests/system/test_faults.py) -------------------


def _children_of(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from ``/proc``; zombies count as gone)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "(comm)": state, ppid, ...
        if fields[0] != "Z":
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class CrashablePostgres:
    """A disposable cluster whose server can be killed with SIGKILL and started again on the
    same data directory and port, as a crashed and restarted database server would be.

    The postmaster is a direct child of this process (``subprocess.Popen``, as the
    ``postgres`` OS user when root), so it is reaped after a kill rather than left as a
    zombie holding ``postmaster.pid``.

    Durability: unlike :func:`start_postgres`, commits are synchronous
    (``synchronous_commit=on``), so a commit is acknowledged only once its WAL is written.
    ``fsync=off`` and ``full_page_writes=off`` stay: they only matter when the *operating
    system* crashes. A SIGKILL of the server processes leaves the OS page cache, which holds
    every page PostgreSQL has written, intact, and the restart's crash recovery replays the
    WAL from it, so no acknowledged commit can be lost in these tests.
    """

    def __init__(self) -> None:
        bin_dir = find_pg_bin()
        self.postgres_bin = bin_dir / "postgres"
        self.pg_isready = bin_dir / "pg_isready"
        self.tmp_dir = Path(tempfile.mkdtemp(prefix="gql_usage_crash_pg_"))
        self.data_dir = self.tmp_dir / "data"
        self.log_file = self.tmp_dir / "postgres.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        #: Extra ``-c name=value`` server settings (``tests/support/citus_server.py``).
        self.settings: list[str] = []

    @property
    def url(self) -> str:
        return f"postgres://{PG_SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        if _is_root():
            shutil.chown(self.tmp_dir, user=PG_OS_USER, group=None)
        init = _run(_as_pg_user([str(find_pg_bin() / "initdb"), "-D", str(self.data_dir),
                                 "--auth=trust", "-U", PG_SUPERUSER, "--encoding=UTF8",
                                 "--locale=C", "--no-sync"]), cwd=self.tmp_dir)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed (exit {init.returncode}):\n{init.stdout}")

    def start(self, timeout: float = _START_TIMEOUT_S) -> None:
        """Start the server (on a new free port the first time, the same port after)."""
        import pwd
        import time

        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("the server is already running")
        self.port = self.port or free_port()
        argv = [str(self.postgres_bin), "-D", str(self.data_dir), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1",
                "-c", f"unix_socket_directories={self.tmp_dir}",
                "-c", "fsync=off", "-c", "synchronous_commit=on", "-c", "full_page_writes=off",
                "-c", "max_connections=100", "-c", "timezone=UTC"]
        for setting in self.settings:
            argv += ["-c", setting]
        user: dict[str, object] = {}
        if _is_root():
            entry = pwd.getpwnam(PG_OS_USER)
            user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(  # type: ignore[call-overload]
                argv, cwd=self.tmp_dir, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=_clean_env(), **user)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.process.returncode}:\n"
                                   f"{_tail(self.log_file)}")
            ready = _run([str(self.pg_isready), "-q", "-h", "127.0.0.1", "-p", str(self.port),
                          "-t", "1"], cwd=self.tmp_dir, timeout=10)
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError(f"postgres not ready after {timeout} s:\n{_tail(self.log_file)}")

    def kill(self) -> None:
        """SIGKILL the postmaster and every process it started, and wait until all are gone."""
        import time

        if self.process is None or self.process.poll() is not None:
            raise RuntimeError("the server is not running")
        victims = [self.process.pid, *_children_of(self.process.pid)]
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in victims) and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # immediate shutdown
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)


@contextlib.contextmanager
def crashable_postgres() -> Iterator[CrashablePostgres]:
    """A started :class:`CrashablePostgres`, removed (data directory included) on exit."""
    server = CrashablePostgres()
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.close()

