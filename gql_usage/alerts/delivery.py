"""The webhook delivery worker: sends stored alerts to ``GQL_USAGE_WEBHOOK_URL``, signed,
until the receiver answers 2xx (README, "Alerts and webhooks").

It runs in the background of every server process when a webhook URL is configured
(``alert_delivery``), claims due alerts from the outbox (``gql_usage.alerts.outbox``),
POSTs them concurrently, each bounded by ``timeout_s`` in all, and records the outcome; a
failed attempt is tried again after ``gql_usage.alerts.backoff.retry_delay``. At start it
finds the alerts a previous process left undelivered. Ingestion never waits for it: a
slow or dead receiver only delays the alerts themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx

from gql_usage.alerts import outbox
from gql_usage.alerts.backoff import retry_delay
from gql_usage.alerts.outbox import StoredAlert
from gql_usage.alerts.signing import SIGNATURE_HEADER, signature_header
from gql_usage.alerts.wakeup import listening
from gql_usage.calendar import US
from gql_usage.untrusted import bounded

log = logging.getLogger("gql_usage.alerts")

#: Alerts claimed (and sent concurrently) per round.
BATCH = 20
#: A claim's lease past the attempt's timeout: room to record the outcome.
LEASE_MARGIN_S = 5.0
USER_AGENT = "gql-usage-webhooks/1"
#: Shortest pause between rounds (an alert due but held by another process's claim).
MIN_WAIT_S = 0.01


@dataclass(frozen=True)
class DeliveryConfig:
    url: str
    secret: str
    timeout_s: float = 10.0
    retry_base_s: float = 10.0
    retry_max_s: float = 3600.0
    poll_s: float = 5.0


class AlertDelivery:
    """Delivers due alerts; ``run`` forever, or ``deliver_due`` one round."""

    def __init__(self, config: DeliveryConfig, *, client: httpx.AsyncClient | None = None,
                 clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self.client = client or httpx.AsyncClient(follow_redirects=False)
        self.clock = clock
        self.rng = rng or random.Random()
        self.wake = asyncio.Event()

    async def deliver_due(self) -> int:
        """Claim the alerts due now (at most ``BATCH``), send them, record each outcome;
        returns how many were claimed."""
        now_us = int(self.clock() * US)
        lease_us = int((self.config.timeout_s + LEASE_MARGIN_S) * US)
        alerts = await outbox.claim(now_us, lease_us, BATCH)
        if alerts:
            await asyncio.gather(*(self._attempt(a) for a in alerts))
        return len(alerts)

    async def _attempt(self, alert: StoredAlert) -> None:
        error = await self.send(alert)
        now = self.clock()
        if error is None:
            log.info("alert delivered", extra={"alert_id": alert.id,
                                               "attempt": alert.attempts + 1})
            await outbox.delivered(alert, int(now * US))
            return
        delay = retry_delay(alert.attempts + 1, self.config.retry_base_s,
                            self.config.retry_max_s, self.rng)
        log.warning("alert delivery failed: %s; next attempt in %.1f s", error, delay,
                    extra={"alert_id": alert.id, "attempt": alert.attempts + 1})
        await outbox.failed(alert, error, int((now + delay) * US))

    async def send(self, alert: StoredAlert) -> str | None:
        """POST ``alert``, signed now; None on a 2xx answer, else what went wrong."""
        body = alert.body()
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                   "Gql-Usage-Alert-Id": alert.id,
                   SIGNATURE_HEADER: signature_header(self.config.secret, int(self.clock()),
                                                      body)}
        try:
            async with asyncio.timeout(self.config.timeout_s):
                response = await self.client.post(self.config.url, content=body,
                                                   headers=headers,
                                                   timeout=self.config.timeout_s)
        except TimeoutError:
            return f"no answer within {self.config.timeout_s:g} s"
        except httpx.HTTPError as exc:
            return bounded(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        if 200 <= response.status_code < 300:
            return None
        return bounded(f"HTTP {response.status_code}: {response.text[:200]}")

    async def run(self) -> None:
        """Deliver forever: at once while alerts are due, else when the next stored alert
        falls due, when ingestion records one (``wakeup``), or after ``poll_s``, whichever
        comes first. Errors (the database down) are logged and retried."""
        while True:
            self.wake.clear()
            wait = self.config.poll_s
            try:
                if await self.deliver_due() == BATCH:
                    continue
                due_us = await outbox.next_due()
                if due_us is not None:
                    wait = min(wait, max(MIN_WAIT_S, due_us / US - self.clock()))
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep delivering after any failure
                log.exception("alert delivery round failed; retrying")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self.wake.wait()

    async def aclose(self) -> None:
        await self.client.aclose()


@contextlib.asynccontextmanager
async def alert_delivery(config: DeliveryConfig) -> AsyncIterator[AlertDelivery]:
    """Run an ``AlertDelivery`` in the background for the duration of the block."""
    delivery = AlertDelivery(config)
    with listening(delivery.wake.set):
        task = asyncio.create_task(delivery.run())
        try:
            yield delivery
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await delivery.aclose()
