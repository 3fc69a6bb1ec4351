"""The typed per-request context handed to every resolver."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gql_usage.analytics import UsageQuery
from gql_usage.auth import Viewer
from gql_usage.loaders import Loaders


@dataclass
class Context:
    request: Request | None
    response: Response | None
    viewer: Viewer
    loaders: Loaders
    request_id: str = "-"
    #: Resolved ``UsageFilter``s of this request, by their value.
    queries: dict[Any, asyncio.Future[UsageQuery]] = field(default_factory=dict)
