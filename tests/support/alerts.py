"""What the alert tests share: the account's period, events in it, the alerts the rules
expect (computed in plain Python from the events sent), and a receiver's signature
check, recomputed with the standard library."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from support.helpers import event

SECRET = "whsec-test-0123456789abcdef"
PERIOD = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
USERS = [("admin", "ADMIN"), ("member", "MEMBER")]


def at(day: int, hour: int = 12) -> datetime:
    return PERIOD[0] + timedelta(days=day - 1, hours=hour)


def ev(n: int | str, credits: int, when: datetime, key: str = "k1",
       account: str = "acme") -> dict[str, Any]:
    return event(f"e{n}", account, key, "admin", "/v2/person", "api", credits, when)


def expected_alerts(batches: Sequence[Sequence[dict[str, Any]]], *, granted: int,
                    thresholds: Sequence[int], budgets: dict[str, int] | None = None,
                    period: tuple[datetime, datetime] = PERIOD) -> list[dict[str, Any]]:
    """The alerts of ``batches`` sent one after the other, by the rules, in plain Python:
    an event counts once (first id wins), only if it falls in the period; after each
    batch, each threshold a total has reached that has no alert yet gets one, with the
    total after that batch."""
    seen: set[str] = set()
    totals: dict[str | None, int] = {}
    alerted: set[tuple[str | None, int]] = set()
    out = []
    for batch in batches:
        for e in batch:
            if e["id"] in seen:
                continue
            seen.add(e["id"])
            if period[0] <= datetime.fromisoformat(e["occurredAt"]) < period[1]:
                totals[None] = totals.get(None, 0) + e["credits"]
                totals[e["apiKeyId"]] = totals.get(e["apiKeyId"], 0) + e["credits"]
        subjects: list[tuple[str | None, int]] = [(None, granted)] + sorted(
            (budgets or {}).items())
        for key, limit in subjects:
            for t in sorted(thresholds):
                used = totals.get(key, 0)
                if limit > 0 and used * 100 >= t * limit and (key, t) not in alerted:
                    alerted.add((key, t))
                    out.append({"type": "pool.threshold" if key is None
                                else "key_budget.threshold", "account": "acme", "key": key,
                                "threshold": t, "used": used, "limit": limit,
                                "periodStart": period[0].isoformat(),
                                "periodEnd": period[1].isoformat()})
    return out


def verified(request: Any) -> dict[str, Any]:
    """The payload of a received request whose signature the test recomputed itself."""
    header = request.headers["gql-usage-signature"]
    parts = dict(p.split("=", 1) for p in header.split(","))
    assert set(parts) == {"t", "v1"}, header
    mac = hmac.new(SECRET.encode(), parts["t"].encode() + b"." + request.body, hashlib.sha256)
    assert hmac.compare_digest(mac.hexdigest(), parts["v1"]), "signature does not verify"
    assert request.headers["content-type"] == "application/json"
    payload: dict[str, Any] = json.loads(request.body)
    assert request.headers["gql-usage-alert-id"] == payload["id"]
    return payload


def without_ids(payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in p.items() if k not in ("id", "occurredAt")} for p in payloads]
