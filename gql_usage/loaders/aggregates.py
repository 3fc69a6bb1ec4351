"""The analytics loader: every aggregate a request asks for at once, in one statement."""

from __future__ import annotations

from collections import defaultdict

from gql_usage.analytics import query as analytics
from gql_usage.analytics.specs import Spec, UsageQuery, query_order, spec_order
from gql_usage.loaders.base import DataLoader

AggregateKey = tuple[UsageQuery, Spec]


class AggregatesLoader(DataLoader[AggregateKey, object]):
    """Answers ``(query, spec)`` keys: the specs of every query of a batch (a report, its
    ``previous`` period, the credit pool, ...) are answered together by
    ``gql_usage.analytics.query.aggregate_many``, in one SQL statement. Queries and specs
    are sent in a fixed order, so one dashboard always makes one statement text."""

    def __init__(self) -> None:
        super().__init__(self._load)

    async def _load(self, keys: list[AggregateKey]) -> list[object]:
        by_query: dict[UsageQuery, list[Spec]] = defaultdict(list)
        for query, spec in keys:
            if spec not in by_query[query]:
                by_query[query].append(spec)
        asked = [(query, sorted(by_query[query], key=spec_order))
                 for query in sorted(by_query, key=query_order)]
        results = await analytics.aggregate_many(asked)
        answers: dict[AggregateKey, object] = {}
        for (query, specs), answered in zip(asked, results, strict=True):
            answers.update({(query, spec): r for spec, r in zip(specs, answered, strict=True)})
        return [answers[k] for k in keys]
