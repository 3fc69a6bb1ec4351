"""Global ids: encoding, decoding, and the hint a raw id gets (gql_usage.graphql.ids)."""

from __future__ import annotations

import base64

import pytest

from gql_usage.graphql import ids


def test_encode_is_base64_of_type_and_external_id() -> None:
    assert ids.encode("ApiKey", "k1") == base64.b64encode(b"ApiKey:k1").decode()
    assert ids.decode(ids.encode("User", "alice@x")) == ("User", "alice@x")


@pytest.mark.parametrize("value", ["k1", "", "QXBpS2V5", base64.b64encode(b"Other:k1").decode(),
                                   base64.b64encode(b"ApiKey:").decode()])
def test_anything_but_our_ids_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="is not a valid id"):
        ids.decode(value)


@pytest.mark.parametrize(("type_name", "listed"), [
    ("ApiKey", "account { apiKeys { id } }"),
    ("User", "viewer { id } or the rows of breakdown(by: USER) { user { id } }")])
def test_a_raw_id_is_shown_its_global_id_and_where_ids_are_listed(type_name: str,
                                                                    listed: str) -> None:
    expected = base64.b64encode(f"{type_name}:prod-key".encode()).decode()
    assert ids.hint("prod-key", type_name) == (
        f'a global id is the base64 of "{type_name}:<id>"; read them from {listed} '
        f"(the {type_name} with id 'prod-key' is {expected!r})")


@pytest.mark.parametrize("value", ["x" * 10_000, "  ", "a\x00b", "tab\there"])
def test_no_encoded_form_is_offered_for_what_cannot_be_an_id(value: str) -> None:
    assert ids.hint(value, "ApiKey") == (
        'a global id is the base64 of "ApiKey:<id>"; read them from '
        "account { apiKeys { id } }")
