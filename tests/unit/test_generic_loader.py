"""The pure part of the by-column loader (``gql_usage.loaders.by_column.in_key_order``):
answers in key order, None for a key no row has, repeated keys answered each time."""

from __future__ import annotations

from types import SimpleNamespace

from gql_usage.loaders.by_column import in_key_order


def test_rows_come_back_in_key_order_whatever_order_the_database_used():
    rows = [SimpleNamespace(id=3), SimpleNamespace(id=1), SimpleNamespace(id=2)]
    assert [r.id for r in in_key_order([1, 2, 3], rows, "id")] == [1, 2, 3]  # type: ignore[union-attr]


def test_missing_keys_are_none():
    rows = [SimpleNamespace(path="/a")]
    got = in_key_order(["/x", "/a", "/y"], rows, "path")  # type: ignore[arg-type]
    assert got == [None, rows[0], None]


def test_repeated_keys_get_the_same_row_each_time():
    row = SimpleNamespace(external_id="k1")
    got = in_key_order(["k1", "k2", "k1"], [row], "external_id")  # type: ignore[arg-type]
    assert got == [row, None, row]
    assert got[0] is got[2]


def test_no_rows_all_none():
    assert in_key_order([5, 6], [], "id") == [None, None]
