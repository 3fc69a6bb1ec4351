"""Access tokens for partners' servers (SPEC 6.4): the secret's format, its hash, and the
rules a token's name and expiry obey. Pure functions; the table is
``gql_usage.storage.access_tokens``, authentication ``gql_usage.auth.load_viewer``.

A token reads ``gqlu_<8 letters or digits>_<43 url-safe characters>``: the scheme and the
first part are its ``prefix`` (shown in lists, so a person recognises the token), the
last part is 32 random bytes (256 bits) from ``secrets``. Only the SHA-256 of the whole
token is stored: for a secret of 256 random bits a plain hash is as good as a slow one
(nothing to guess), and it is a key the token can be looked up by. See
docs/access-tokens.md.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass

from gql_usage.untrusted import text_problem

#: Every access token starts with this (a JWT starts with ``eyJ``).
SCHEME = "gqlu_"
#: Random letters and digits after the scheme, shown as part of the prefix.
PREFIX_CHARACTERS = 8
#: Random bytes of the secret part.
SECRET_BYTES = 32
#: ``gqlu_`` + 8 characters: what lists show.
PREFIX_LENGTH = len(SCHEME) + PREFIX_CHARACTERS
#: Length of ``secrets.token_urlsafe(32)``: 32 bytes in unpadded base64url.
_SECRET_CHARACTERS = 43
TOKEN_LENGTH = PREFIX_LENGTH + 1 + _SECRET_CHARACTERS
_ALPHABET = string.ascii_letters + string.digits
_FORMAT = re.compile(rf"{SCHEME}[A-Za-z0-9]{{{PREFIX_CHARACTERS}}}_"
                     rf"[A-Za-z0-9_-]{{{_SECRET_CHARACTERS}}}")
#: Longest token name (characters).
MAX_NAME_LENGTH = 100
#: ``lastUsedAt`` is written at most once per this many seconds per token: a token's
#: requests cost one statement each, plus one write a minute.
LAST_USED_EVERY_S = 60


@dataclass(frozen=True)
class NewToken:
    """A freshly made token: the secret (shown once), its prefix and its hash."""

    token: str
    prefix: str
    digest: str


def generate() -> NewToken:
    """A new random token."""
    shown = "".join(secrets.choice(_ALPHABET) for _ in range(PREFIX_CHARACTERS))
    token = f"{SCHEME}{shown}_{secrets.token_urlsafe(SECRET_BYTES)}"
    return NewToken(token=token, prefix=prefix_of(token), digest=digest(token))


def looks_like(credential: str) -> bool:
    """Whether a bearer credential is meant as an access token (rather than a JWT)."""
    return credential.startswith(SCHEME)


def format_problem(credential: str) -> str | None:
    """Why ``credential`` cannot be an access token, or None."""
    if len(credential) != TOKEN_LENGTH:
        return f"an access token has {TOKEN_LENGTH} characters, this one {len(credential)}"
    if _FORMAT.fullmatch(credential) is None:
        return (f"an access token reads {SCHEME}<{PREFIX_CHARACTERS} letters or digits>_"
                f"<{_SECRET_CHARACTERS} characters of A-Z a-z 0-9 - _>")
    return None


def prefix_of(token: str) -> str:
    return token[:PREFIX_LENGTH]


def digest(token: str) -> str:
    """The stored form of a token: SHA-256, 64 hex digits."""
    return hashlib.sha256(token.encode()).hexdigest()


def matches(token: str, stored_digest: str) -> bool:
    """Whether ``token`` hashes to ``stored_digest`` (compared in constant time)."""
    return hmac.compare_digest(digest(token).encode(), stored_digest.encode())


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a token, or None."""
    if not name.strip():
        return "must not be empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"must be at most {MAX_NAME_LENGTH} characters (it has {len(name):,})"
    return text_problem(name, controls=True)
