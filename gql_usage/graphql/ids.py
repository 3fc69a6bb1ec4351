"""Opaque global ids (Relay style): base64 of ``"<Type>:<external id>"``."""

from __future__ import annotations

import base64
import binascii

from gql_usage.untrusted import echo

TYPES = ("Account", "ApiKey", "User")


def encode(type_name: str, external_id: str) -> str:
    return base64.b64encode(f"{type_name}:{external_id}".encode()).decode()


def decode(global_id: str) -> tuple[str, str]:
    """(type name, external id); ``ValueError`` for anything that is not one of ours."""
    try:
        text = base64.b64decode(global_id.encode(), validate=True).decode()
    except (binascii.Error, UnicodeError, ValueError):
        raise ValueError(f"{echo(global_id)} is not a valid id") from None
    type_name, sep, external_id = text.partition(":")
    if not sep or type_name not in TYPES or not external_id or "\x00" in external_id:
        raise ValueError(f"{echo(global_id)} is not a valid id")
    return type_name, external_id
