"""The HTTP/1.1 protocol ``gql-usage serve`` runs in uvicorn: uvicorn's h11 protocol
plus a header timeout, a per-process connection cap, lingering close and JSON protocol
errors (``BAD_REQUEST``), against slow and greedy clients.

``install(settings)`` sets this process's limits (``gql-usage serve`` and the worker
factory ``gql_usage.cli:serve_app`` call it); uvicorn gets the protocol as ``PROTOCOL``,
an import string, so that worker processes import it too. See README, "Slow and greedy
clients".
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from gql_usage.http.errors import TIMEOUT
from gql_usage.http.security_headers import SECURITY_HEADERS
from gql_usage.settings import Settings, load_settings

log = logging.getLogger("gql_usage.http.server")

#: uvicorn's ``http=`` option for our protocol.
PROTOCOL = "gql_usage.http.server:GuardedH11Protocol"
#: A lingering close reads at most this many times the larger body limit (and never less
#: than ``LINGER_MIN_BYTES``) ...
LINGER_BODY_LIMITS = 4
LINGER_MIN_BYTES = 16 * 1024 * 1024
#: ... for at most this many seconds.
LINGER_SECONDS = 10.0
#: Descriptors kept free of connections (database pool, log files, the listening socket).
FD_RESERVE = 64

BAD_REQUEST = "BAD_REQUEST"


@dataclass
class Guard:
    """The limits of this process and the connections they apply to."""

    header_timeout_seconds: float
    max_connections: int
    linger_bytes: int
    linger_seconds: float = LINGER_SECONDS
    #: Open connections (as far as the cap is concerned: a closed one leaves at once).
    open: set[GuardedH11Protocol] = field(default_factory=set)
    #: Connections waiting for a request head, longest-waiting first.
    waiting: OrderedDict[GuardedH11Protocol, None] = field(default_factory=OrderedDict)
    #: Connections closed to stay under the cap, and by the header timeout.
    evicted: int = 0
    refused: int = 0
    timed_out: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> Guard:
        return cls(header_timeout_seconds=settings.header_timeout_seconds,
                   max_connections=_fit_to_descriptors(settings.max_connections),
                   linger_bytes=max(LINGER_MIN_BYTES, LINGER_BODY_LIMITS * max(
                       settings.max_body_bytes, settings.max_graphql_body_bytes)))


_guard: Guard | None = None


def install(settings: Settings) -> Guard:
    """Use ``settings``' limits for the connections of this process."""
    global _guard
    _guard = Guard.from_settings(settings)
    return _guard


def current_guard() -> Guard:
    """The installed limits (from the environment if ``install`` was not called)."""
    return _guard if _guard is not None else install(load_settings())


def _fit_to_descriptors(wanted: int) -> int:
    """``wanted`` connections, or fewer if the process may not open that many files.
    The soft limit on open files is raised to the hard limit first."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # pragma: no cover - not allowed here
            pass
    if soft != resource.RLIM_INFINITY and wanted > soft - FD_RESERVE:
        fitted = max(1, soft - FD_RESERVE)
        log.warning("GQL_USAGE_MAX_CONNECTIONS=%d exceeds what %d open files allow: "
                    "using %d", wanted, soft, fitted)
        return fitted
    return wanted


def json_error_bytes(status: int, reason: str, message: str, code: str) -> bytes:
    """A complete HTTP/1.1 answer ``{"error", "code"}`` that closes the connection, for
    errors raised before a request reaches the application."""
    body = json.dumps({"error": message, "code": code}).encode()
    head = [f"HTTP/1.1 {status} {reason}".encode(), b"content-type: application/json",
            f"content-length: {len(body)}".encode(), b"connection: close",
            *(name + b": " + value for name, value in SECURITY_HEADERS)]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class _LingeringTransport:
    """The transport as uvicorn's protocol sees it: ``close()`` while the request body is
    still arriving turns into a lingering close (``GuardedH11Protocol.linger``)."""

    def __init__(self, transport: asyncio.Transport, protocol: GuardedH11Protocol) -> None:
        self._transport = transport
        self._protocol = protocol

    def close(self) -> None:
        if not self._protocol.linger():
            self._transport.close()

    def is_closing(self) -> bool:
        return self._protocol.lingering or self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header timeout, a connection cap, lingering close
    and JSON protocol errors (see the module's documentation)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = current_guard()
        self.raw_transport: asyncio.Transport | None = None
        self.head_timer: asyncio.TimerHandle | None = None
        self.heads_seen = 0           # request heads parsed on this connection
        self.bytes_since_wait = 0     # bytes received since the wait for a head began
        self.lingering = False
        self.linger_timer: asyncio.TimerHandle | None = None
        self.lingered_bytes = 0
        self.lost = False

    # --- connection life ------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.raw_transport = transport
        guard = self.guard
        if len(guard.open) >= guard.max_connections:
            if guard.waiting:
                oldest, _ = guard.waiting.popitem(last=False)
                guard.evicted += 1
                log.warning("connection limit (%d) reached: closed the connection waiting "
                            "longest for a request head", guard.max_connections)
                oldest.abort_waiting()
            else:
                guard.refused += 1
                log.warning("connection limit (%d) reached and every connection is busy: "
                            "refused a new one", guard.max_connections)
                transport.close()
                self.lost = True
                return
        guard.open.add(self)
        super().connection_made(_LingeringTransport(transport, self))  # type: ignore[arg-type]
        self._wait_for_head()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost and self.transport is None:
            return  # refused in connection_made: uvicorn never saw it
        self.lost = True
        self._stop_waiting()
        self.guard.open.discard(self)
        if self.linger_timer is not None:
            self.linger_timer.cancel()
            self.linger_timer = None
        super().connection_lost(exc)

    def abort_waiting(self) -> None:
        """Close this connection now (it waits for a head; nothing is lost)."""
        self.guard.open.discard(self)
        self._stop_waiting()
        if self.raw_transport is not None:
            self.raw_transport.close()

    # --- header timeout ---------------------------------------------------------------

    def _wait_for_head(self) -> None:
        """A request head must now arrive within the header timeout."""
        self._stop_waiting()
        self.bytes_since_wait = 0
        self.guard.waiting[self] = None
        self.head_timer = self.loop.call_later(self.guard.header_timeout_seconds,
                                               self._head_timed_out, self.heads_seen)

    def _stop_waiting(self) -> None:
        self.guard.waiting.pop(self, None)
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self, heads_seen: int) -> None:
        self.head_timer = None
        if self.heads_seen != heads_seen or self.raw_transport is None \
                or self.raw_transport.is_closing():
            return
        self.guard.waiting.pop(self, None)
        self.guard.timed_out += 1
        if self.bytes_since_wait and self.conn.their_state is h11.IDLE:  # half a head
            log.warning("request head not complete within %gs: closed the connection",
                        self.guard.header_timeout_seconds)
            self.raw_transport.write(json_error_bytes(
                408, "Request Timeout", "request head not received within "
                f"{self.guard.header_timeout_seconds:g} s", TIMEOUT))
        self.guard.open.discard(self)
        self.raw_transport.close()

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            self._discard(data)
            return
        self.bytes_since_wait += len(data)
        super().data_received(data)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request head was parsed
            self.heads_seen += 1
            self._stop_waiting()

    def on_response_complete(self) -> None:
        if self.conn.their_state is h11.SEND_BODY:
            # answered before the body arrived (a 413, a 401): drain it, bounded, and
            # close, rather than parse the rest of an unwanted body for ever
            self.linger()
        heads = self.heads_seen
        super().on_response_complete()  # may start a pipelined request
        if (heads == self.heads_seen and not self.lost and self.raw_transport is not None
                and not self.raw_transport.is_closing() and not self.lingering):
            self._wait_for_head()

    # --- lingering close --------------------------------------------------------------

    def linger(self) -> bool:
        """Instead of closing, read and discard the rest of a request body still arriving
        (bounded by ``linger_bytes`` and ``linger_seconds``); whether it does."""
        if self.lingering:
            return True
        if self.lost or self.raw_transport is None or self.raw_transport.is_closing() \
                or self.conn.their_state is not h11.SEND_BODY:
            return False
        self.lingering = True
        self._stop_waiting()
        if self.raw_transport.can_write_eof():
            self.raw_transport.write_eof()  # the answer is complete: FIN after it
        self.raw_transport.resume_reading()
        self.linger_timer = self.loop.call_later(self.guard.linger_seconds,
                                                 self.raw_transport.close)
        return True

    def _discard(self, data: bytes) -> None:
        self.lingered_bytes += len(data)
        if self.lingered_bytes > self.guard.linger_bytes and self.raw_transport is not None:
            self.raw_transport.close()

    def eof_received(self) -> None:
        if self.lingering and self.raw_transport is not None:
            self.raw_transport.close()  # the client is done sending: the body is drained

    # --- JSON protocol errors ---------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request h11 cannot parse, as coded JSON."""
        self._stop_waiting()
        self.guard.open.discard(self)
        if self.raw_transport is not None:
            self.raw_transport.write(json_error_bytes(
                400, "Bad Request", msg.rstrip(".") + " (malformed HTTP/1.1)", BAD_REQUEST))
            self.raw_transport.close()
