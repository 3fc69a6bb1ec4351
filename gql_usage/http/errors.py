"""Coded JSON errors: the codes, the shape per route (GraphQL's on ``/graphql``,
``{"error", "code"}`` elsewhere) and Starlette's exception handlers. See README,
"Security and HTTP"."""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Scope

TIMEOUT = "TIMEOUT"
INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
NOT_FOUND = "NOT_FOUND"
METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
UNAUTHENTICATED = "UNAUTHENTICATED"
PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
BAD_USER_INPUT = "BAD_USER_INPUT"
SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
CORS_REJECTED = "CORS_REJECTED"
#: The code of an ``HTTPException`` by status (Starlette raises 404 and 405 itself).
HTTP_EXCEPTION_CODES = {400: BAD_USER_INPUT, 401: UNAUTHENTICATED, 404: NOT_FOUND,
                        405: METHOD_NOT_ALLOWED, 413: PAYLOAD_TOO_LARGE,
                        415: UNSUPPORTED_MEDIA_TYPE, 422: BAD_USER_INPUT,
                        503: SERVICE_UNAVAILABLE}
GRAPHQL_PATH = "/graphql"


def error_response(path: str, status: int, message: str, code: str,
                   **extensions: Any) -> JSONResponse:
    """A coded JSON error in the shape of the route: GraphQL's on ``/graphql``, the
    service API's (``{"error", "code"}``) elsewhere."""
    if path == GRAPHQL_PATH:
        body: dict[str, Any] = {"data": None, "errors": [
            {"message": message, "extensions": {"code": code, **extensions}}]}
    else:
        body = {"error": message, "code": code, **extensions}
    return JSONResponse(body, status_code=status)


def internal_error_response(scope: Scope) -> JSONResponse:
    """The coded 500 for an unexpected exception: no internals, the request id to quote."""
    request_id = str(scope.get("state", {}).get("request_id", "-"))
    return error_response(scope["path"], 500, f"Internal server error (request id "
                          f"{request_id})", INTERNAL_SERVER_ERROR, requestId=request_id)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's ``HTTPException``s (no route: 404; a route without the method: 405)
    as coded JSON instead of Starlette's plain text."""
    assert isinstance(exc, HTTPException)
    path, status = request.url.path, exc.status_code
    if status == 404:
        message = f"no such route: {request.method} {path}"
    elif status == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"method {request.method} not allowed on {path} (allowed: {allowed})"
    else:
        message = exc.detail
    code = HTTP_EXCEPTION_CODES.get(status, INTERNAL_SERVER_ERROR if status >= 500
                                    else BAD_USER_INPUT)
    response = error_response(path, status, message, code)
    response.headers.update(exc.headers or {})
    return response


async def internal_error(request: Request, exc: Exception) -> Response:
    """Starlette's handler for exceptions escaping a route (``ServerErrorMiddleware``
    sends this, then re-raises to ``AccessLog``, which logs it with the request id)."""
    return internal_error_response(request.scope)
