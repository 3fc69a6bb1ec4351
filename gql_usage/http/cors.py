"""Cross-origin requests: JSON-only GraphQL POSTs (no CSRF) and the CORS middleware."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from gql_usage.http.errors import CORS_REJECTED, error_response

#: Headers a browser may send cross-origin (CORS), and the ones it may read back.
CORS_ALLOW_HEADERS = ("Authorization", "Content-Type", "X-Request-ID")
CORS_EXPOSE_HEADERS = ("X-Request-ID", "Retry-After", "X-RateLimit-Limit",
                       "X-RateLimit-Remaining", "X-RateLimit-Used", "X-RateLimit-Reset",
                       "X-Query-Cost")


def is_json_content_type(value: str | None) -> bool:
    """Whether a request ``Content-Type`` is JSON (``application/json``, parameters such
    as ``charset`` allowed). Browsers send cross-site "simple" requests only as
    ``text/plain``, ``multipart/form-data`` or ``application/x-www-form-urlencoded``; a
    JSON content type needs a CORS preflight, which ``cors_origins`` governs."""
    if not value:
        return False
    essence = value.split(";", 1)[0].strip().lower()
    return essence == "application/json"


class JsonCORSMiddleware(CORSMiddleware):
    """Starlette's CORS middleware, refusing a preflight with coded JSON (400
    ``CORS_REJECTED``, naming what was disallowed) instead of plain text."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        detail = bytes(response.body).decode("utf-8", "replace")  # "Disallowed CORS origin"
        refusal = error_response("", response.status_code, f"CORS preflight refused: {detail}",
                                 CORS_REJECTED)
        for name, value in response.headers.items():
            if name not in ("content-type", "content-length"):
                refusal.headers[name] = value
        return refusal
