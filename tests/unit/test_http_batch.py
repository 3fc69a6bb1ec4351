"""``gql_usage.http.batch.check_batch``: a batched GraphQL request is 1 to
``max_operations`` request objects whose known members have the right JSON types;
anything else refuses the whole request with HTTP 400 and a code."""

from __future__ import annotations

from typing import Any

import pytest
from cross_web import HTTPException

from gql_usage.http.batch import CodedHTTPException, check_batch

OK = {"query": "{ viewer { id } }"}


def refusal(operations: list[Any], max_operations: int = 10) -> tuple[int, str, str]:
    with pytest.raises(CodedHTTPException) as caught:
        check_batch(operations, max_operations)
    return caught.value.status_code, caught.value.code, caught.value.reason


@pytest.mark.parametrize("size", [1, 2, 10])
def test_batches_of_one_to_the_cap_pass(size: int) -> None:
    full = {"query": "{ a }", "operationName": "A", "variables": {"x": 1},
            "extensions": {"e": True}}
    nulls = {"query": None, "operationName": None, "variables": None, "extensions": None}
    unknown = {"query": "{ a }", "something": ["else"]}  # not ours to judge
    items = [full, nulls, unknown, {}, OK] * 2
    assert check_batch(items[:size], 10) is None


@pytest.mark.parametrize(("size", "cap"), [(11, 10), (2, 1), (1000, 10)])
def test_one_operation_over_the_cap_is_too_many(size: int, cap: int) -> None:
    assert refusal([OK] * size, cap) == (
        400, "TOO_MANY_OPERATIONS", f"Too many operations in one batch: {size} sent, at "
        f"most {cap} accepted per request. Split the batch into several requests.")


def test_the_cap_is_checked_before_the_items() -> None:
    """A huge batch of junk is refused by its size, without looking at each item."""
    assert refusal([1] * 50, 10)[1] == "TOO_MANY_OPERATIONS"


def test_an_empty_batch_is_bad_input() -> None:
    assert refusal([]) == (400, "BAD_USER_INPUT", "Empty batch: send at least one "
                           "operation ({query, variables, operationName}).")


@pytest.mark.parametrize(("item", "kind"), [
    ("{ a }", "str"), (1, "int"), (1.5, "float"), (True, "bool"), (None, "NoneType"),
    ([OK], "list")])
def test_an_item_that_is_not_an_object_is_named(item: Any, kind: str) -> None:
    assert refusal([OK, OK, item, 7]) == (
        400, "BAD_USER_INPUT",
        f"batch[2] must be an object {{query, variables, operationName}}, not {kind}.")


@pytest.mark.parametrize(("key", "value", "kind"), [
    ("query", 1, "a string"), ("query", {"q": 1}, "a string"), ("query", ["{ a }"], "a string"),
    ("query", True, "a string"), ("operationName", 3, "a string"),
    ("operationName", ["A"], "a string"), ("variables", [1], "an object"),
    ("variables", "{}", "an object"), ("variables", 0, "an object"),
    ("extensions", "x", "an object"), ("extensions", [], "an object"),
    ("extensions", False, "an object")])
def test_a_member_of_the_wrong_type_is_named(key: str, value: Any, kind: str) -> None:
    assert refusal([OK, {**OK, key: value}]) == (
        400, "BAD_USER_INPUT", f"batch[1].{key} must be {kind} or null, if provided.")


def test_the_first_bad_item_is_named() -> None:
    assert refusal([OK, {"variables": []}, "x"])[2].startswith("batch[1].variables ")


def test_a_refusal_is_the_http_exception_the_graphql_view_answers() -> None:
    """The GraphQL view catches ``cross_web.HTTPException`` and answers it in GraphQL's
    shape with ``code``; a plain one (no code) there reads as BAD_USER_INPUT."""
    with pytest.raises(HTTPException) as caught:
        check_batch([], 10)
    assert isinstance(caught.value, CodedHTTPException)
    assert (caught.value.status_code, caught.value.code) == (400, "BAD_USER_INPUT")
