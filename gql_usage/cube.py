"""The usage cube: which rows summarise an event, as SQL (PostgreSQL) and in Python (SQLite).

See ``gql_usage.models`` for the cube's layout. ``cells_sql`` aggregates any relation of
events with the event columns into cube rows; ingestion uses it on PostgreSQL (over the
rows an ``INSERT ... RETURNING`` reports as new) and the migration that created the cube
uses it to backfill. ``cells`` does the same in Python for SQLite batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gql_usage.models import CUBE_SETS, DIM_BITS, GRAINS

DIM_COLUMNS = tuple(DIM_BITS)  # api_key_id, endpoint_id, source_id, user_id
KEY_COLUMNS = ("account_id", "grain", "dims", *DIM_COLUMNS, "t")
INSERT_COLUMNS = ("account_id", "grain", "dims", "t", *DIM_COLUMNS, "calls", "credits")
COMBOS = tuple((grain, dims) for grain in GRAINS for dims in CUBE_SETS)
UPSERT_TAIL = (f" ON CONFLICT ({', '.join(KEY_COLUMNS)}) DO UPDATE SET"
               " calls = usage_cube.calls + excluded.calls,"
               " credits = usage_cube.credits + excluded.credits")


def cells_sql(source: str) -> str:
    """``SELECT`` of cube rows (in ``INSERT_COLUMNS`` order) from relation ``source``,
    which has ``account_id``, the four dimension columns, ``credits`` and
    ``occurred_at_us``. Sorted by the unique key, so concurrent writers lock rows in the
    same order."""
    combos = " UNION ALL ".join(f"SELECT {g} AS grain, {d} AS dims" for g, d in COMBOS)
    dims = ", ".join(f"CASE WHEN g.dims & {bit} = 0 THEN 0 ELSE e.{col} END AS {col}"
                     for col, bit in DIM_BITS.items())
    return (
        f"SELECT e.account_id, g.grain, g.dims, (e.occurred_at_us / 1000000 / g.grain) * g.grain"
        f" AS t, {dims}, COUNT(*) AS calls, SUM(e.credits) AS credits"
        f" FROM {source} e CROSS JOIN ({combos}) g WHERE true"
        f" GROUP BY 1, 2, 3, 4, 5, 6, 7, 8"
        f" ORDER BY 1, 2, 3, 5, 6, 7, 8, 4"
    )


def cells(rows: Iterable[Sequence[int]]) -> dict[tuple[int, ...], list[int]]:
    """Cube rows from events ``(account_id, api_key_id, endpoint_id, source_id, user_id,
    credits, occurred_at_us)``: key in ``INSERT_COLUMNS`` order up to ``t``, value
    ``[calls, credits]``."""
    out: dict[tuple[int, ...], list[int]] = {}
    bits = tuple(DIM_BITS.values())
    for account_id, key, endpoint, source, user, credits, occurred_us in rows:
        values = (key, endpoint, source, user)
        seconds = occurred_us // 1_000_000
        for grain, dims in COMBOS:
            cell_key = (account_id, grain, dims, seconds // grain * grain,
                        *(v if dims & b else 0 for v, b in zip(values, bits, strict=True)))
            cell = out.get(cell_key)
            if cell is None:
                out[cell_key] = [1, credits]
            else:
                cell[0] += 1
                cell[1] += credits
    return out
