"""A real webhook receiver on 127.0.0.1 for the alert tests: a threaded ``http.server``
that records every request and answers with the statuses it is told to (200 once the
list is used up), or holds requests unanswered until released."""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from support.ports import free_port

#: Longest wait for a condition on the receiver (generous: the machine is shared).
DEADLINE_S = 60.0


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() when it arrived


@dataclass
class Receiver:
    port: int
    statuses: list[int] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    #: While set, requests are held unanswered (``holding`` counts them) until cleared.
    hold: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    holding: int = 0
    changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/gql-usage"

    def wait_for(self, predicate: Any, what: str, timeout: float = DEADLINE_S) -> None:
        """Block until ``predicate(self)`` holds (checked on every request), or fail."""
        with self.changed:
            if not self.changed.wait_for(lambda: predicate(self), timeout=timeout):
                raise AssertionError(f"receiver: gave up waiting for {what}; got "
                                     f"{len(self.requests)} requests")

    def wait_requests(self, n: int, timeout: float = DEADLINE_S) -> list[Received]:
        self.wait_for(lambda r: len(r.requests) >= n, f"{n} requests", timeout)
        with self.changed:
            return list(self.requests)


def _handler(receiver: Receiver) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            got = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                           time.time())
            with receiver.changed:
                receiver.requests.append(got)
                held = receiver.hold.is_set()
                if held:
                    receiver.holding += 1
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.changed.notify_all()
            if held:
                receiver.release.wait(DEADLINE_S)
                with receiver.changed:
                    receiver.holding -= 1
                    receiver.changed.notify_all()
            payload = b"ok" if status < 300 else b"receiver says no"
            with contextlib.suppress(OSError):  # the sender may have given up
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

    return Handler


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    #: socketserver listens with a backlog of 5: a burst of concurrent deliveries (two
    #: workers' batches) would overflow it, and the dropped connections be retried by the
    #: client's TCP only after a second.
    request_queue_size = 128


@contextlib.contextmanager
def webhook_receiver(port: int | None = None, statuses: list[int] | None = None,
                     ) -> Iterator[Receiver]:
    """A receiver listening on ``port`` (default: a free one) until the block ends."""
    receiver = Receiver(port or free_port(), list(statuses or []))
    server = _Server(("127.0.0.1", receiver.port), _handler(receiver))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
