"""The fast execution of plain-leaf objects answers exactly like graphql-core's own.

Both executions run the same schema and documents: plain objects in lists, enums,
DateTimes, nullable fields, and the failure cases the fast path hands back (a null in a
non-null field, an Int out of range, a value a scalar refuses). Data, error messages and
error paths must be identical.
"""

from __future__ import annotations

import asyncio
import enum
from datetime import UTC, datetime

import pytest
import strawberry

from gql_usage.graphql.execution import FastExecutionContext


@strawberry.enum
class Colour(enum.Enum):
    RED = "RED"
    BLUE = "BLUE"


@strawberry.type
class Point:
    start: datetime
    calls: int
    label: str | None
    colour: Colour


@strawberry.type
class Row:
    """Plain leaves beside resolver fields (sync, async, failing): the general path, in
    selection order."""

    key: str
    calls: int

    @strawberry.field
    def doubled(self) -> int:
        return self.calls * 2

    @strawberry.field
    async def later(self) -> int:
        await asyncio.sleep(0)
        return self.calls + 1

    @strawberry.field
    def broken(self) -> int | None:
        if self.calls == 1:
            raise ValueError("row 1 is broken")
        return self.calls


def _points(kind: str) -> list[Point]:
    base = [Point(start=datetime(2026, 1, 1, i, tzinfo=UTC), calls=i, label=None if i % 2
                  else f"p{i}", colour=Colour.RED if i % 3 else Colour.BLUE)
            for i in range(5)]
    if kind == "null":
        base[2].calls = None  # type: ignore[assignment]
    if kind == "overflow":
        base[3].calls = 2**40
    if kind == "not-a-colour":
        base[1].colour = "GREEN"  # type: ignore[assignment]
    if kind == "null-item":
        base[4] = None  # type: ignore[call-overload]
    if kind == "not-a-point":
        base[0] = {"calls": 1}  # type: ignore[call-overload]
    return base


@strawberry.type
class Query:
    @strawberry.field
    def points(self, kind: str = "ok") -> list[Point]:
        return _points(kind)

    @strawberry.field
    def maybe_points(self, kind: str = "ok") -> list[Point | None]:
        return _points(kind)  # type: ignore[return-value]

    @strawberry.field
    def rows(self, kind: str = "ok") -> list[Row]:
        rows = [Row(key=f"k{i}", calls=i) for i in range(3)]
        if kind == "null":
            rows[2].calls = None  # type: ignore[assignment]
        return rows


DOCUMENTS = [
    "{ points { start calls label colour } }",
    "{ points { c: calls calls s: start } rows { key doubled calls } }",
    "{ points { ...P } } fragment P on Point { calls label }",
    "{ points { calls @skip(if: true) label @include(if: true) } }",
    '{ points(kind: "null") { calls label } }',
    '{ points(kind: "overflow") { start calls } }',
    '{ points(kind: "not-a-colour") { colour calls } }',
    "{ points { __typename calls } }",
    '{ points(kind: "null-item") { calls } }',
    '{ maybePoints(kind: "null-item") { calls label } }',
    '{ maybePoints(kind: "null") { calls label } }',
    '{ points(kind: "not-a-point") { calls } }',
    "{ points { calls } rows { key } maybePoints { start } }",
    "{ rows { key doubled calls } }",
    '{ rows(kind: "null") { key calls doubled } }',
    '{ rows(kind: "null") { key broken } }',
    "{ rows { k: key broken calls key } }",
    "{ rows { __typename key doubled t: __typename } maybePoints { calls __typename } }",
    '{ maybePoints(kind: "null-item") { __typename calls } }',
]
#: Documents with an async resolver among plain leaves (run with ``schema.execute``).
ASYNC_DOCUMENTS = [
    "{ rows { key later calls } }",
    '{ rows(kind: "null") { later key calls } }',
    "{ rows { broken later k: key } }",
    "{ rows { later doubled } points { calls } }",
]


def _answer(schema: strawberry.Schema, document: str) -> tuple[object, list[tuple[str, object]]]:
    result = schema.execute_sync(document)
    errors = [(e.message, e.path) for e in result.errors or []]
    return result.data, errors


@pytest.mark.parametrize("document", DOCUMENTS)
def test_fast_execution_answers_like_graphql_core(document: str) -> None:
    plain = strawberry.Schema(query=Query)
    fast = strawberry.Schema(query=Query, execution_context_class=FastExecutionContext)
    assert _answer(fast, document) == _answer(plain, document)


@pytest.mark.parametrize("document", ASYNC_DOCUMENTS)
async def test_fast_execution_answers_like_graphql_core_when_async(document: str) -> None:
    plain = strawberry.Schema(query=Query)
    fast = strawberry.Schema(query=Query, execution_context_class=FastExecutionContext)
    answers = []
    for schema in (fast, plain):
        result = await schema.execute(document)
        answers.append((result.data, [(e.message, e.path) for e in result.errors or []]))
    assert answers[0] == answers[1]


async def test_the_async_mixed_answers_keep_the_selection_order() -> None:
    fast = strawberry.Schema(query=Query, execution_context_class=FastExecutionContext)
    result = await fast.execute("{ rows { later k: key calls } }")
    assert result.errors is None
    assert [list(row) for row in result.data["rows"]] == [["later", "k", "calls"]] * 3  # type: ignore[index]


def test_the_mixed_answers_keep_the_selection_order() -> None:
    fast = strawberry.Schema(query=Query, execution_context_class=FastExecutionContext)
    result = fast.execute_sync("{ rows { doubled k: key calls broken key } }")
    assert [list(row) for row in result.data["rows"]] == [  # type: ignore[index]
        ["doubled", "k", "calls", "broken", "key"]] * 3
    assert [e.path for e in result.errors or []] == [["rows", 1, "broken"]]


def test_the_failure_cases_really_fail() -> None:
    """The comparisons above include errors, not just equal successes."""
    plain = strawberry.Schema(query=Query)
    for kind in ("null", "overflow", "not-a-colour"):
        data, errors = _answer(plain, f'{{ points(kind: "{kind}") {{ calls colour }} }}')
        assert errors and data is None, kind


def _general_fields(document: str) -> tuple[object, int]:
    """The answer of ``document`` and how many fields graphql-core executed itself."""
    calls = {"general": 0}

    class Counting(FastExecutionContext):
        def execute_field(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            calls["general"] += 1
            return super().execute_field(*args, **kwargs)

    schema = strawberry.Schema(query=Query, execution_context_class=Counting)
    result = schema.execute_sync(document)
    assert result.errors is None
    return result.data, calls["general"]


def test_the_fast_path_is_taken_for_plain_objects() -> None:
    data, general = _general_fields("{ points { start calls label colour } }")
    assert len(data["points"]) == 5  # type: ignore[index]
    assert general == 1  # only `points` itself; its five objects took the fast path


def test_typename_is_read_as_a_plain_leaf() -> None:
    """Apollo adds ``__typename`` to every selection: the fast path must stay."""
    data, general = _general_fields("{ points { __typename calls kind: __typename } }")
    assert data == {"points": [{"__typename": "Point", "calls": i, "kind": "Point"}
                               for i in range(5)]}
    assert general == 1  # only `points` itself


def test_a_plain_list_is_completed_in_one_step() -> None:
    items = {"completed one by one": 0}

    class Counting(FastExecutionContext):
        def complete_list_item_value(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            items["completed one by one"] += 1
            return super().complete_list_item_value(*args, **kwargs)

    schema = strawberry.Schema(query=Query, execution_context_class=Counting)
    result = schema.execute_sync('{ points { calls } maybePoints(kind: "null-item") { calls } }')
    assert result.errors is None and result.data is not None
    assert len(result.data["points"]) == 5 and result.data["maybePoints"][4] is None
    # `points` in one step; `maybePoints` has a null item and takes the general path.
    assert items["completed one by one"] == 5
