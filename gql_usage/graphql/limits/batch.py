"""The batched-request check (a holding place: it moves to the HTTP package)."""

from __future__ import annotations

from typing import Any

from cross_web import HTTPException

from gql_usage.graphql.errors import BAD_USER_INPUT, TOO_MANY_OPERATIONS


class CodedHTTPException(HTTPException):
    """An HTTP-level refusal (the whole request) with a GraphQL error code."""

    def __init__(self, status_code: int, reason: str, code: str) -> None:
        super().__init__(status_code, reason)
        self.code = code


_BATCH_ITEM_TYPES = (("query", str), ("operationName", str), ("variables", dict),
                     ("extensions", dict))


def check_batch(operations: list[Any], max_operations: int) -> None:
    """A batch (a JSON array of requests) is 1 to ``max_operations`` request objects."""
    if len(operations) > max_operations:
        raise CodedHTTPException(
            400, f"Too many operations in one batch: {len(operations)} sent, at most "
            f"{max_operations} accepted per request. Split the batch into several "
            "requests.", TOO_MANY_OPERATIONS)
    if not operations:
        raise CodedHTTPException(400, "Empty batch: send at least one operation "
                                 "({query, variables, operationName}).", BAD_USER_INPUT)
    for i, item in enumerate(operations):
        if not isinstance(item, dict):
            raise CodedHTTPException(
                400, f"batch[{i}] must be an object {{query, variables, operationName}}, "
                f"not {type(item).__name__}.", BAD_USER_INPUT)
        for key, expected in _BATCH_ITEM_TYPES:
            if item.get(key) is not None and not isinstance(item[key], expected):
                kind = "a string" if expected is str else "an object"
                raise CodedHTTPException(
                    400, f"batch[{i}].{key} must be {kind} or null, if provided.",
                    BAD_USER_INPUT)


