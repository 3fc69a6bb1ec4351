"""The typed per-request context handed to every resolver, and its loaders."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gql_usage.analytics.specs import UsageQuery
from gql_usage.auth import Viewer
from gql_usage.calendar import US
from gql_usage.graphql.limits.rate_limit import Charge, Clock
from gql_usage.loaders.aggregates import AggregatesLoader
from gql_usage.loaders.api_keys import ApiKeysLoader
from gql_usage.loaders.by_column import ByColumnLoader
from gql_usage.storage.models import ApiKey, Endpoint, Source, User


@dataclass(frozen=True)
class Loaders:
    """The request's loaders (made inside the running loop; they cache for the request
    only). Keys and users are looked up within the viewer's account only."""

    aggregates: AggregatesLoader
    api_keys: ApiKeysLoader
    api_keys_by_external: ByColumnLoader[str, ApiKey]
    users: ByColumnLoader[int, User]
    users_by_external: ByColumnLoader[str, User]
    endpoints: ByColumnLoader[int, Endpoint]
    endpoints_by_path: ByColumnLoader[str, Endpoint]
    sources: ByColumnLoader[int, Source]
    sources_by_key: ByColumnLoader[str, Source]

    @classmethod
    def for_account(cls, account_id: int) -> Loaders:
        return cls(
            aggregates=AggregatesLoader(),
            api_keys=ApiKeysLoader(account_id),
            api_keys_by_external=ByColumnLoader(ApiKey, "external_id", account_id),
            users=ByColumnLoader(User, "id", account_id),
            users_by_external=ByColumnLoader(User, "external_id", account_id),
            endpoints=ByColumnLoader(Endpoint, "id", None),
            endpoints_by_path=ByColumnLoader(Endpoint, "path", None),
            sources=ByColumnLoader(Source, "id", None),
            sources_by_key=ByColumnLoader(Source, "key", None),
        )


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
    #: "Now" of what the request computes from the time (the credit pool's forecast): the
    #: app's clock (``create_app(clock=...)``), Unix seconds.
    clock: Clock = time.time

    def now_us(self) -> int:
        """The clock's time in microseconds since the epoch."""
        return round(self.clock() * US)
