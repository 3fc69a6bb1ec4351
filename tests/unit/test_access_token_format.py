"""The access token's format, hash and name rules (``gql_usage.access_tokens``). Named
apart from tests/integration/test_access_tokens.py: pytest imports test modules by basename."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from gql_usage import access_tokens
from gql_usage.access_tokens import (
    MAX_NAME_LENGTH,
    digest,
    format_problem,
    generate,
    looks_like,
    matches,
    name_problem,
)
from gql_usage.auth import issue_token


def test_a_new_token_has_the_documented_format_prefix_and_hash() -> None:
    new = generate("acme")
    assert re.fullmatch(r"gqlu_[A-Za-z0-9]{8}_[A-Za-z0-9_-]{43}\.YWNtZQ", new.token), new.token
    assert len(new.token) == access_tokens.TOKEN_LENGTH + 7 == 64
    assert new.prefix == new.token[:13] and new.prefix.startswith("gqlu_")
    assert new.digest == hashlib.sha256(new.token.encode()).hexdigest()
    assert format_problem(new.token) is None and looks_like(new.token)


def test_the_secret_part_is_32_random_bytes() -> None:
    tokens = [generate("a").token.split(".")[0] for _ in range(2000)]
    assert len(set(tokens)) == len(tokens)
    assert len({t[:13] for t in tokens}) > 1990  # 62^8 prefixes: collisions are rare
    raw = [base64.urlsafe_b64decode(t[14:] + "=") for t in tokens]
    assert {len(r) for r in raw} == {32}
    # Every bit position takes both values across 2,000 tokens (a fixed or short secret
    # would not): 256 bits of randomness, not a counter or a timestamp.
    for bit in range(256):
        values = {(r[bit // 8] >> (bit % 8)) & 1 for r in raw}
        assert values == {0, 1}, bit


def test_the_hash_matches_only_its_own_token() -> None:
    new = generate("acme")
    assert matches(new.token, new.digest)
    assert not matches(new.token[:-1] + ("A" if new.token[-1] != "A" else "B"), new.digest)
    assert not matches(generate("acme").token, new.digest)
    head = new.token.split(".")[0]
    assert not matches(f"{head}.{access_tokens.account_part('beta')}", new.digest)
    assert digest(new.token) == digest(new.token)  # deterministic: the lookup key


@pytest.mark.parametrize("account", ["acme", "a", "x" * 128, "Zürich ☃ 東京", "a.b_c-d/e=f+"])
def test_the_account_part_gives_back_the_account_id(account: str) -> None:
    new = generate(account)
    assert format_problem(new.token) is None
    assert access_tokens.account_of(new.token) == account
    assert set(new.token.split(".", 1)[1]) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_a_token_of_the_first_format_names_no_account() -> None:
    head = generate("acme").token.split(".")[0]
    assert format_problem(head) is None and access_tokens.account_of(head) is None


_HEAD = "gqlu_abcdefgh_" + "a" * 43


@pytest.mark.parametrize(("credential", "words"), [
    (_HEAD + ".", "unpadded base64url"),
    (_HEAD + ".YWNtZQ==", "unpadded base64url"),
    (_HEAD + ".YWN$ZQ", "unpadded base64url"),
    (_HEAD + ".YWNtZ", "unpadded base64url"),          # 5 characters: no whole byte
    (_HEAD + "." + access_tokens.account_part("a") + ".x", "unpadded base64url"),
    (_HEAD + ".__8", "does not decode"),                 # bytes ff ff: not UTF-8
    (_HEAD + "." + access_tokens.account_part(" "), "must not be blank"),
    (_HEAD + "." + access_tokens.account_part("a\x00b"), "NUL"),
    (_HEAD + "." + access_tokens.account_part("x" * 129), "at most 128"),
])
def test_malformed_account_parts_are_named(credential: str, words: str) -> None:
    problem = format_problem(credential)
    assert problem is not None and words in problem, problem


@pytest.mark.parametrize(("credential", "words"), [
    ("gqlu_", "57 characters"),
    ("gqlu_" + "a" * 60, "57 characters"),
    ("gqlu_abcdefgh-" + "a" * 43, "reads gqlu_"),   # the separator
    ("gqlu_abc-efgh_" + "a" * 43, "reads gqlu_"),   # the prefix is letters and digits
    ("gqlu_abcdefgh_" + "a" * 42 + "=", "reads gqlu_"),
    ("gqlu_abcdefgh_" + "a" * 42 + "é", "reads gqlu_"),
    ("GQLU_abcdefgh_" + "a" * 43, "reads gqlu_"),
])
def test_malformed_tokens_are_named(credential: str, words: str) -> None:
    problem = format_problem(credential)
    assert problem is not None and words in problem


def test_a_jwt_is_never_taken_for_an_access_token() -> None:
    jwt = issue_token("s" * 32, "user", "account")
    assert not looks_like(jwt) and jwt.startswith("eyJ")


@pytest.mark.parametrize(("name", "words"), [
    ("", "must not be empty"),
    (" \t ", "must not be empty"),
    ("x" * (MAX_NAME_LENGTH + 1), f"at most {MAX_NAME_LENGTH} characters"),
    ("a\x00b", "NUL"),
    ("a\x1bb", "control characters"),
    ("\ud800", "surrogate"),
])
def test_bad_names_are_named(name: str, words: str) -> None:
    problem = name_problem(name)
    assert problem is not None and words in problem, problem


@pytest.mark.parametrize("name", ["a", "Partner dashboard (prod)", "x" * MAX_NAME_LENGTH,
                                  "Zürich ☃"])
def test_good_names_pass(name: str) -> None:
    assert name_problem(name) is None
