"""Opaque global ids (Relay style): base64 of ``"<Type>:<external id>"``."""

from __future__ import annotations

import base64
import binascii

from gql_usage.untrusted import echo, id_problem

TYPES = ("Account", "ApiKey", "User", "AccessToken")
#: Where a client finds each type's global ids.
LISTED_AT = {"Account": "account { id }", "ApiKey": "account { apiKeys { id } }",
             "User": "viewer { id } or the rows of breakdown(by: USER) { user { id } }",
             "AccessToken": "account { accessTokens { id } }"}


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


def hint(value: str, type_name: str) -> str:
    """How to write a ``type_name`` global id, for an error about ``value``: the encoded
    form of ``value`` itself when it could be an external id (the usual mistake: a raw
    id where a global id is expected), and where the ids are listed."""
    how = (f"a global id is the base64 of \"{type_name}:<id>\"; read them from "
           f"{LISTED_AT[type_name]}")
    if id_problem(value) is None:
        return f"{how} (the {type_name} with id {echo(value)} is {encode(type_name, value)!r})"
    return how
