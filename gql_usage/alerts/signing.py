"""Webhook signatures: ``Gql-Usage-Signature: t=<unix seconds>,v1=<hex>``, where ``v1`` is
HMAC-SHA256 of ``<t>.<body>`` under ``GQL_USAGE_WEBHOOK_SECRET`` (README, "Alerts and
webhooks", shows a receiver's check)."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "Gql-Usage-Signature"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``<timestamp>.<body>`` under ``secret``."""
    message = str(int(timestamp)).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    """The value of ``Gql-Usage-Signature`` for ``body`` sent at ``timestamp``."""
    return f"t={int(timestamp)},v1={signature(secret, timestamp, body)}"


def verify(secret: str, header: str, body: bytes, now: float, tolerance_s: float = 300) -> bool:
    """What a receiver checks: the header is well formed, its timestamp is within
    ``tolerance_s`` of ``now`` (a replayed old request fails) and some ``v1`` matches
    (compared in constant time)."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or abs(now - timestamp) > tolerance_s:
        return False
    expected = signature(secret, timestamp, body)
    return any(hmac.compare_digest(expected, c) for c in candidates)
