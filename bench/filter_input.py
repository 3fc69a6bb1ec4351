"""What building ``UsageFilter`` arguments costs per dashboard request (issue 11).

    python -m bench.filter_input [--requests 2000] [--keys 50]

Runs the real schema's ``execute`` in-process on SQLite (the demo data plus API keys up
to ``--keys``) on the dashboard query, whose filter is passed to every key's ``usage``,
with Strawberry's generic conversion of input objects and with the ``from_input`` hook
that ``gql_usage.graphql.inputs.plain_input`` installs, in alternating rounds. Prints ms
per request for each, then the conversion of one filter by itself (microseconds).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from strawberry.types.arguments import convert_argument

from gql_usage.auth import Viewer
from gql_usage.demo import ACME, seed_demo
from gql_usage.graphql.context import Context, Loaders
from gql_usage.graphql.filters import UsageFilter
from gql_usage.graphql.schema import build_schema
from gql_usage.settings import Settings
from gql_usage.storage.db import close_db, init_db
from gql_usage.storage.models import Account, ApiKey, User

DASHBOARD = """query Dashboard($f: UsageFilter!) {
  viewer { name }
  account {
    name plan
    creditPool { granted used remaining }
    usage(filter: $f) {
      calls credits
      series(granularity: DAY) { start calls credits }
      byEndpoint: breakdown(by: ENDPOINT) { key label calls credits shareOfCredits }
      byKey: breakdown(by: API_KEY) { key label apiKey { name } credits }
    }
    apiKeys { id name usage(filter: $f) { calls credits } }
  }
}"""

ROUNDS = 10


def _conversion_alone(definition: Any, schema: Any, hook: Any) -> None:
    """The filter's conversion by itself, as the resolver's argument conversion calls it."""
    value = {"from": datetime(2026, 1, 1, tzinfo=UTC), "to": datetime(2026, 2, 1, tzinfo=UTC),
             "timeZone": None, "apiKeyIds": None, "endpoints": None, "sources": None,
             "userIds": None}
    n = 100_000
    for label, from_input in (("Strawberry's conversion", None), ("plain_input", hook)):
        definition.from_input = from_input
        t0 = time.perf_counter()
        for _ in range(n):
            convert_argument(value, UsageFilter, schema.schema_converter.scalar_registry,
                             schema.config)
        print(f"{label}, conversion alone: {(time.perf_counter() - t0) * 1e6 / n:.2f} us/filter")
    definition.from_input = hook


async def _run(requests: int, keys: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        await init_db(f"sqlite://{Path(tmp) / 'bench.sqlite3'}")
        try:
            await seed_demo(events=20_000, now=datetime(2026, 3, 1, tzinfo=UTC))
            account = await Account.get(external_id=ACME)
            user = await User.get(account_id=account.id, external_id="u_alice")
            have = await ApiKey.filter(account_id=account.id).count()
            for i in range(have, keys):
                await ApiKey.create(account_id=account.id, external_id=f"bench-k{i}",
                                    name=f"bench key {i}", prefix="pk",
                                    created_at=datetime(2025, 1, 1, tzinfo=UTC))
            schema = build_schema(Settings.model_construct(
                max_query_cost=10**9, rate_limit_points=10**12))
            viewer = Viewer(user=user, account=account)
            variables = {"f": {"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"}}

            async def once() -> None:
                context = Context(request=None, response=None, viewer=viewer,
                                  loaders=Loaders.for_account(account.id))
                result = await schema.execute(DASHBOARD, variables, context_value=context)
                assert not result.errors, result.errors

            definition = UsageFilter.__strawberry_definition__
            hook = definition.from_input  # installed by ``plain_input``
            hooks = {"Strawberry's conversion": None, "plain_input": hook}
            per_round = max(requests // ROUNDS, 1)
            times: dict[str, list[float]] = {label: [] for label in hooks}
            for round_no in range(-1, ROUNDS):  # round -1 warms the caches
                # Alternating rounds: a busy machine slows both variants alike.
                for label, hook in hooks.items():
                    definition.from_input = hook  # type: ignore[assignment]
                    t0 = time.perf_counter()
                    for _ in range(per_round):
                        await once()
                    if round_no >= 0:
                        times[label].append((time.perf_counter() - t0) * 1000 / per_round)
            definition.from_input = hook
            for label, ms in times.items():
                print(f"{label}: median {statistics.median(ms):.3f} ms/request, best round "
                      f"{min(ms):.3f} ({ROUNDS} rounds of {per_round} requests)")
            _conversion_alone(definition, schema, hook)
        finally:
            await close_db()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--keys", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(_run(args.requests, args.keys))


if __name__ == "__main__":
    main()
