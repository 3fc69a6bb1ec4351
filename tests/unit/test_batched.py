"""``@batched`` fields (``gql_usage.graphql.batched``) answer exactly like their resolvers.

A list's batched field is computed once for the list by the fast execution; the same
schema run by graphql-core alone calls the resolver on every object. Both must give the
same data and the same errors (messages and paths) for every viewer the field's rules
treat differently, and for every case the fast path hands back: a refused rule, a
failing batch, a null in a non-null field, a selection that is not plain leaves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
import strawberry

from gql_usage.graphql.batched import batched
from gql_usage.graphql.directives import ADMIN_ONLY, PAID_PLAN, guarded
from gql_usage.graphql.execution import FastExecutionContext
from gql_usage.storage.models import Plan, Role

CALLS: dict[str, int] = {"batch": 0, "resolver": 0}
EVENTS: list[str] = []  # when batches start and end
UNLUCKY = 13  # a scale whose computation fails
NOT_A_FUNCTION = 7  # a scale whose batch returns something not callable
ITEM_2_FAILS = 8  # a scale at which item 2's usage alone fails


@strawberry.type
class Totals:
    calls: int
    credits: int

    @strawberry.field
    def per_call(self) -> float:
        """A resolver field: not a plain leaf."""
        return self.credits / self.calls if self.calls else 0.0


def _totals(n: int, scale: int) -> Totals | None:
    """An item's usage at ``scale`` (``None`` for item 4: "no usage")."""
    if scale == UNLUCKY:
        raise ValueError(f"scale {UNLUCKY} cannot be computed")
    if scale == ITEM_2_FAILS and n == 2:
        raise ValueError("no usage for item 2")
    return None if n == 4 else Totals(calls=n * scale, credits=n * scale * 10)


async def _batch(info: Any, scale: int = 1) -> Callable[[Any], Totals | None]:
    CALLS["batch"] += 1
    EVENTS.append(f"start {scale}")
    await asyncio.sleep(0)
    EVENTS.append(f"end {scale}")
    _totals(0, scale)  # fails as a whole for the unlucky scale
    if scale == NOT_A_FUNCTION:
        return {"not": "callable"}  # type: ignore[return-value]
    return lambda item: _totals(item.n, scale)


async def _one(n: int, scale: int) -> Totals | None:
    CALLS["resolver"] += 1
    await asyncio.sleep(0)
    return _totals(n, scale)


@strawberry.interface
class Named:
    name: str


@strawberry.type
class Item(Named):
    """Implements an interface: Strawberry gives it an ``is_type_of``."""

    n: int

    @strawberry.field(graphql_type=Totals | None, extensions=[guarded(ADMIN_ONLY, PAID_PLAN)])
    @batched(_batch)
    def usage(self, info: strawberry.Info, scale: int = 1) -> Awaitable[Totals | None]:
        return _one(self.n, scale)

    @strawberry.field(graphql_type=Totals, extensions=[guarded(PAID_PLAN)])
    @batched(_batch)
    def strict(self, info: strawberry.Info, scale: int = 1) -> Awaitable[Totals | None]:
        return _one(self.n, scale)


@strawberry.type
class Query:
    @strawberry.field
    def items(self, upto: int = 4) -> list[Item]:
        return [Item(name=f"item {n}", n=n) for n in range(upto)]


VIEWERS = {
    "admin, paid": (Role.ADMIN, Plan.PRO),
    "member, paid": (Role.MEMBER, Plan.PRO),
    "admin, free": (Role.ADMIN, Plan.FREE),
}
DOCUMENTS = [
    "{ items { n usage { calls credits } } }",
    "{ items { a: usage(scale: 2) { calls } name b: usage(scale: 3) { credits c: calls } } }",
    "{ items { ...U } } fragment U on Item { usage { credits } n }",
    "query($s: Int!) { items { usage(scale: $s) { calls } } }",
    "{ items(upto: 6) { n usage { calls } } }",  # item 4 has no usage: null
    "{ items { usage(scale: 13) { calls } } }",  # the computation fails
    "{ items(upto: 6) { strict { calls } } }",  # a null in a non-null field
    "{ items { strict(scale: 2) { calls credits } name } }",
    "{ items { usage { calls perCall } } }",  # not plain leaves: the general path
    "{ items { usage { calls } usage { credits } } }",  # one field, merged selections
    "{ items { usage @include(if: false) { calls } n } }",
    "{ items(upto: 0) { usage { calls } } }",
    "{ items { n usage(scale: 7) { calls } } }",  # the batch returns no function
    "{ items { n usage(scale: 8) { calls } } }",  # item 2's answer fails
    "{ items { __typename usage { __typename calls } } }",
]


def _context(viewer: str) -> SimpleNamespace:
    role, plan = VIEWERS[viewer]
    return SimpleNamespace(viewer=SimpleNamespace(user=SimpleNamespace(role=role, id=1),
                                                  account=SimpleNamespace(plan=plan)))


async def _answer(schema: strawberry.Schema, document: str, viewer: str
                  ) -> tuple[object, list[tuple[str, object]]]:
    result = await schema.execute(document, variable_values={"s": 5},
                                  context_value=_context(viewer))
    return result.data, [(e.message, e.path) for e in result.errors or []]


@pytest.mark.parametrize("viewer", list(VIEWERS))
@pytest.mark.parametrize("document", DOCUMENTS)
async def test_batched_fields_answer_like_their_resolvers(document: str, viewer: str) -> None:
    plain = strawberry.Schema(query=Query)
    fast = strawberry.Schema(query=Query, execution_context_class=FastExecutionContext)
    assert await _answer(fast, document, viewer) == await _answer(plain, document, viewer)


async def test_the_comparisons_include_errors_and_nulls() -> None:
    """The cases above really fail (or are null) where they should."""
    plain = strawberry.Schema(query=Query)
    data, errors = await _answer(plain, DOCUMENTS[5], "admin, paid")
    assert errors == [(f"scale {UNLUCKY} cannot be computed", ["items", i, "usage"])
                      for i in range(4)]
    data, errors = await _answer(plain, DOCUMENTS[6], "admin, paid")
    assert data is None and [path for _, path in errors] == [["items", 4, "strict"]]
    data, _ = await _answer(plain, DOCUMENTS[4], "admin, paid")
    assert [row["usage"] for row in data["items"]] == [  # type: ignore[index]
        {"calls": 0}, {"calls": 1}, {"calls": 2}, {"calls": 3}, None, {"calls": 5}]
    data, errors = await _answer(plain, DOCUMENTS[13], "admin, paid")
    assert errors == [("no usage for item 2", ["items", 2, "usage"])]
    assert data["items"][3] == {"n": 3, "usage": {"calls": 24}}  # type: ignore[index]
    data, errors = await _answer(plain, DOCUMENTS[0], "member, paid")
    assert len(errors) == 4 and errors[0][0].startswith("Only admins")
    data, errors = await _answer(plain, DOCUMENTS[0], "admin, free")
    assert len(errors) == 4 and errors[0][0].startswith("Usage analytics need a paid plan")


async def test_a_batched_field_is_computed_once_per_list_and_argument() -> None:
    fast = strawberry.Schema(query=Query, execution_context_class=FastExecutionContext)
    CALLS.update(batch=0, resolver=0)
    data, errors = await _answer(fast, DOCUMENTS[1], "admin, paid")
    assert errors == [] and data == {"items": [
        {"a": {"calls": 2 * n}, "name": f"item {n}", "b": {"credits": 30 * n, "c": 3 * n}}
        for n in range(4)]}
    assert CALLS == {"batch": 2, "resolver": 0}  # one batch per alias, no resolver


async def test_typename_keeps_the_batch() -> None:
    fast = strawberry.Schema(query=Query, execution_context_class=FastExecutionContext)
    CALLS.update(batch=0, resolver=0)
    data, errors = await _answer(fast, DOCUMENTS[14], "admin, paid")
    assert errors == [] and data == {"items": [
        {"__typename": "Item", "usage": {"__typename": "Totals", "calls": n}}
        for n in range(4)]}
    assert CALLS == {"batch": 1, "resolver": 0}


async def test_the_batches_of_one_list_start_together() -> None:
    """As the resolvers would: loads made in one loop turn share a loader dispatch."""
    fast = strawberry.Schema(query=Query, execution_context_class=FastExecutionContext)
    EVENTS.clear()
    _, errors = await _answer(fast, DOCUMENTS[1], "admin, paid")
    assert errors == [] and EVENTS == ["start 2", "start 3", "end 2", "end 3"]


async def test_what_the_batch_cannot_answer_runs_the_resolvers() -> None:
    fast = strawberry.Schema(query=Query, execution_context_class=FastExecutionContext)
    for document, viewer, calls in (
            (DOCUMENTS[0], "member, paid", {"batch": 0, "resolver": 0}),  # refused per item
            (DOCUMENTS[5], "admin, paid", {"batch": 1, "resolver": 4}),  # the batch failed
            (DOCUMENTS[6], "admin, paid", {"batch": 1, "resolver": 6}),  # a non-null null
            (DOCUMENTS[8], "admin, paid", {"batch": 0, "resolver": 4}),  # a resolver
            (DOCUMENTS[12], "admin, paid", {"batch": 1, "resolver": 4}),  # not a function
            (DOCUMENTS[13], "admin, paid", {"batch": 1, "resolver": 4})):  # item 2 failed
        CALLS.update(batch=0, resolver=0)
        await _answer(fast, document, viewer)
        assert CALLS == calls, document
