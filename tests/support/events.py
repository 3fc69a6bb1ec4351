"""Random usage events for one account, ``acme``, over three keys, users, endpoints and
sources (the exactness and fault tests compare what is stored with what was sent)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from support.helpers import event

KEYS = ["k1", "k2", "k3"]
USERS = [("admin", "ADMIN"), ("u2", "MEMBER"), ("u3", "MEMBER")]
ENDPOINTS = ["/v2/person", "/v2/company", "prospecting/contact/enrich"]
SOURCES = ["api", "chrome_extension", "salesforce"]


def random_events(rng: random.Random, n: int, *, start: datetime, days: int, credits: int,
                  prefix: str = "ev") -> list[dict[str, Any]]:
    """``n`` events ``{prefix}-0`` ... with times in [start, start + days) to the
    microsecond and credits in [0, credits)."""
    out = []
    for i in range(n):
        occurred = start + timedelta(seconds=rng.randrange(0, days * 86400),
                                     microseconds=rng.randrange(0, 1_000_000))
        out.append(event(f"{prefix}-{i}", "acme", rng.choice(KEYS), rng.choice(USERS)[0],
                         rng.choice(ENDPOINTS), rng.choice(SOURCES), rng.randrange(0, credits),
                         occurred))
    return out


def when(e: dict[str, Any]) -> datetime:
    """An event's ``occurredAt``, in UTC."""
    return datetime.fromisoformat(e["occurredAt"]).astimezone(UTC)
