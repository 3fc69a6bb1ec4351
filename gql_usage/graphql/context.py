"""The typed per-request context handed to every resolver."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gql_usage.analytics.query import UsageQuery
from gql_usage.auth import Viewer
from gql_usage.graphql.limits import Charge
from gql_usage.loaders.by_column import Loaders


@dataclass
class Context:
    request: Request | None
    response: Response | None
    viewer: Viewer
    loaders: Loaders
    request_id: str = "-"
    #: Resolved ``UsageFilter``s of this request, by their value.
    queries: dict[Any, asyncio.Future[UsageQuery]] = field(default_factory=dict)
    #: What each executed operation of this request was charged, by ``id(operation)``.
    charges: dict[int, Charge] = field(default_factory=dict)
    #: Cost of this request's operations (summed over a batch): ``X-Query-Cost``.
    query_cost: int = 0
