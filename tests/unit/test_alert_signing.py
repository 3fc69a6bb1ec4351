"""Webhook signatures (``gql_usage.alerts.signing``): HMAC-SHA256 of ``<t>.<body>``,
recomputed here with the standard library, and what a receiver's check refuses."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from gql_usage.alerts.signing import SIGNATURE_HEADER, signature, signature_header, verify

SECRET = "whsec-unit"
BODY = b'{"id":"a1","type":"pool.threshold","used":800}'
T = 1_767_225_600


def expected(secret: str, t: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def test_the_header_is_t_and_the_hmac_of_timestamp_dot_body() -> None:
    assert SIGNATURE_HEADER == "Gql-Usage-Signature"
    assert signature(SECRET, T, BODY) == expected(SECRET, T, BODY)
    assert signature_header(SECRET, T, BODY) == f"t={T},v1={expected(SECRET, T, BODY)}"
    # A known vector (RFC 4231 test case 2 uses "Jefe"; here the same key on our message).
    assert signature("Jefe", 0, b"what do ya want for nothing?") == hmac.new(
        b"Jefe", b"0.what do ya want for nothing?", hashlib.sha256).hexdigest()


def test_a_receiver_accepts_the_real_signature() -> None:
    header = signature_header(SECRET, T, BODY)
    assert verify(SECRET, header, BODY, now=T + 10)
    assert verify(SECRET, f"v1=deadbeef, {header}", BODY, now=T)  # any v1 may match


@pytest.mark.parametrize("change", [
    "body", "secret", "timestamp", "old", "future", "no_t", "no_v1", "garbage"])
def test_a_receiver_refuses_anything_else(change: str) -> None:
    header, body, secret, now = signature_header(SECRET, T, BODY), BODY, SECRET, T
    if change == "body":
        body = BODY.replace(b"800", b"801")
    elif change == "secret":
        secret = SECRET + "x"
    elif change == "timestamp":  # the signature of another moment
        header = header.replace(f"t={T}", f"t={T + 1}")
        now = T + 1
    elif change == "old":  # a replay past the tolerance
        now = T + 301
    elif change == "future":
        now = T - 301
    elif change == "no_t":
        header = header.split(",", 1)[1]
    elif change == "no_v1":
        header = header.split(",", 1)[0]
    else:
        header = "nonsense"
    assert not verify(secret, header, body, now=now)
