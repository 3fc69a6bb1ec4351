"""HTTP hygiene around the application: request ids, access log, security headers, CORS,
request timeouts, JSON-only GraphQL POSTs, and the liveness/readiness probes.

``harden(app, settings)`` wraps the Starlette app; outermost first:

``RequestId`` -> ``SecurityHeaders`` -> ``AccessLog`` -> ``CORSMiddleware`` ->
``RequestTimeout`` -> the app.

so every answer, including CORS preflights, timeouts and the last-resort 500, carries
``X-Request-ID`` and the security headers, and is written to the access log.
"""

from __future__ import annotations

from starlette.types import ASGIApp

from gql_usage.http.access_log import AccessLog
from gql_usage.http.cors import CORS_ALLOW_HEADERS, CORS_EXPOSE_HEADERS, JsonCORSMiddleware
from gql_usage.http.request_id import RequestId
from gql_usage.http.security_headers import SecurityHeaders
from gql_usage.http.timeout import RequestTimeout
from gql_usage.settings import Settings


def harden(app: ASGIApp, settings: Settings) -> ASGIApp:
    """Wrap ``app`` in the middlewares above, configured from ``settings``."""
    wrapped: ASGIApp = RequestTimeout(app, settings.request_timeout_seconds)
    wrapped = JsonCORSMiddleware(wrapped, allow_origins=settings.cors_origins,
                             allow_methods=("GET", "POST"), allow_headers=CORS_ALLOW_HEADERS,
                             expose_headers=CORS_EXPOSE_HEADERS, allow_credentials=False,
                             max_age=600)
    wrapped = AccessLog(wrapped)
    wrapped = SecurityHeaders(wrapped)
    return RequestId(wrapped)
