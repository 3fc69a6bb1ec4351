"""``harden(app, settings)``: the HTTP middleware stack around the Starlette app.

Outermost first: ``RequestId`` -> ``SecurityHeaders`` -> ``AccessLog`` ->
``JsonCORSMiddleware`` -> ``RequestTimeout`` -> the app, so every answer (CORS
preflights, timeouts and the last-resort 500 included) carries ``X-Request-ID`` and the
security headers and is logged. See README, "Security and HTTP".
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
    """Wrap ``app`` in the middlewares, configured from ``settings``."""
    wrapped: ASGIApp = RequestTimeout(app, settings.request_timeout_seconds)
    wrapped = JsonCORSMiddleware(wrapped, allow_origins=settings.cors_origins,
                             allow_methods=("GET", "POST"), allow_headers=CORS_ALLOW_HEADERS,
                             expose_headers=CORS_EXPOSE_HEADERS, allow_credentials=False,
                             max_age=600)
    wrapped = AccessLog(wrapped)
    wrapped = SecurityHeaders(wrapped)
    return RequestId(wrapped)
