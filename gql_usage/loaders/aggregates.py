"""The analytics loader: every aggregate a request asks for, one statement per filter."""

from __future__ import annotations

from collections import defaultdict

from gql_usage.analytics import query as analytics
from gql_usage.analytics.specs import Spec, UsageQuery, spec_order
from gql_usage.loaders.base import DataLoader

AggregateKey = tuple[UsageQuery, Spec]


class AggregatesLoader(DataLoader[AggregateKey, object]):
    """Answers ``(query, spec)`` keys: the specs of one query are answered together by
    ``gql_usage.analytics.query.aggregate`` (one SQL statement per distinct query)."""

    def __init__(self) -> None:
        super().__init__(self._load)

    async def _load(self, keys: list[AggregateKey]) -> list[object]:
        by_query: dict[UsageQuery, list[Spec]] = defaultdict(list)
        for query, spec in keys:
            if spec not in by_query[query]:
                by_query[query].append(spec)
        answers: dict[AggregateKey, object] = {}
        for query, asked in by_query.items():
            specs = sorted(asked, key=spec_order)
            results = await analytics.aggregate(query, specs)
            answers.update({(query, spec): r for spec, r in zip(specs, results, strict=True)})
        return [answers[k] for k in keys]
