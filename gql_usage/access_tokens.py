"""Access tokens for partners' servers (SPEC 6.4): the secret's format, its hash, and the
rules a token's name and expiry obey. Pure functions; the table is
``gql_usage.storage.access_tokens``, authentication ``gql_usage.auth.load_viewer``.

A token reads ``gqlu_<8 letters or digits>_<43 url-safe characters>.<account>``: the
scheme and the first part are its ``prefix`` (shown in lists, so a person recognises the
token), the second part is 32 random bytes (256 bits) from ``secrets``, and ``<account>``
is the external id of the token's account in unpadded base64url (UTF-8), so that the
lookup can name the account: on Citus it then reads the account's shard alone
(docs/citus.md). The account part is no secret (the token's holder acts for that
account) and cannot be altered: only the SHA-256 of the whole token, account part
included, is stored, and the lookup matches both. For a secret of 256 random bits a
plain hash is as good as a slow one (nothing to guess), and it is a key the token can be
looked up by. Tokens made before the account part existed (57 characters, none in
production) are still accepted and looked up by their hash alone. See
docs/access-tokens.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass

from gql_usage.untrusted import id_problem, text_problem

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
#: Characters before the account part (a token of the first format has these alone).
TOKEN_LENGTH = PREFIX_LENGTH + 1 + _SECRET_CHARACTERS
#: Separates the secret from the account part (not a base64url character).
ACCOUNT_SEPARATOR = "."
_ACCOUNT_PART = re.compile(r"[A-Za-z0-9_-]+")
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


def generate(account: str) -> NewToken:
    """A new random token of the account with external id ``account``."""
    shown = "".join(secrets.choice(_ALPHABET) for _ in range(PREFIX_CHARACTERS))
    token = (f"{SCHEME}{shown}_{secrets.token_urlsafe(SECRET_BYTES)}"
             f"{ACCOUNT_SEPARATOR}{account_part(account)}")
    return NewToken(token=token, prefix=prefix_of(token), digest=digest(token))


def account_part(account: str) -> str:
    """The account's external id as a token ends with it: unpadded base64url of UTF-8."""
    return base64.urlsafe_b64encode(account.encode()).rstrip(b"=").decode()


def account_of(credential: str) -> str | None:
    """The external id of the account a well-formed token names (``format_problem`` is
    None), or None for a token of the first format, which names none."""
    _, separator, part = credential.partition(ACCOUNT_SEPARATOR)
    if not separator:
        return None
    return _decoded(part)


def _decoded(part: str) -> str:
    raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    return raw.decode()


def looks_like(credential: str) -> bool:
    """Whether a bearer credential is meant as an access token (rather than a JWT)."""
    return credential.startswith(SCHEME)


def format_problem(credential: str) -> str | None:
    """Why ``credential`` cannot be an access token, or None."""
    head, separator, part = credential.partition(ACCOUNT_SEPARATOR)
    if len(head) != TOKEN_LENGTH:
        return (f"an access token has {TOKEN_LENGTH} characters before its "
                f"'{ACCOUNT_SEPARATOR}<account>' part, this one {len(head)}")
    if _FORMAT.fullmatch(head) is None:
        return (f"an access token reads {SCHEME}<{PREFIX_CHARACTERS} letters or digits>_"
                f"<{_SECRET_CHARACTERS} characters of A-Z a-z 0-9 - _>"
                f"{ACCOUNT_SEPARATOR}<account>")
    if not separator:
        return None  # the first format, without the account part
    if not _ACCOUNT_PART.fullmatch(part) or len(part) % 4 == 1:
        return (f"the account part after '{ACCOUNT_SEPARATOR}' must be unpadded base64url "
                "(A-Z a-z 0-9 - _)")
    try:
        account = _decoded(part)
    except (binascii.Error, UnicodeDecodeError):
        return "the account part does not decode to an account id (base64url of UTF-8)"
    problem = id_problem(account)
    if problem:
        return f"the account part names no valid account id: it {problem}"
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
