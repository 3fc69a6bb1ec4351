"""Error codes. Every GraphQL error leaves with ``extensions.code``; unexpected exceptions
are masked as ``INTERNAL_SERVER_ERROR`` (logged with the request id, never sent). No
message is longer than ``untrusted.MESSAGE_LIMIT`` characters: ours quote input through
``untrusted.echo``, and graphql-core's (which may quote a whole literal) are cut."""

from __future__ import annotations

import logging

from graphql.error import GraphQLError
from strawberry.extensions import MaskErrors

from gql_usage.faults import SERVICE_UNAVAILABLE, UNAVAILABLE_MESSAGE, describe, is_unavailable
from gql_usage.untrusted import bounded

log = logging.getLogger("gql_usage.graphql")

UNAUTHENTICATED = "UNAUTHENTICATED"
FORBIDDEN = "FORBIDDEN"
PLAN_UPGRADE_REQUIRED = "PLAN_UPGRADE_REQUIRED"
BAD_USER_INPUT = "BAD_USER_INPUT"
NOT_FOUND = "NOT_FOUND"
INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
# Query limits (gql_usage/graphql/limits/): refused before execution, so before any
# analytics SQL; the message says what to change.
QUERY_TOO_DEEP = "QUERY_TOO_DEEP"
TOO_MANY_ALIASES = "TOO_MANY_ALIASES"
TOO_MANY_TOKENS = "TOO_MANY_TOKENS"
QUERY_TOO_COSTLY = "QUERY_TOO_COSTLY"
RATE_LIMITED = "RATE_LIMITED"
INTROSPECTION_DISABLED = "INTROSPECTION_DISABLED"
TOO_MANY_OPERATIONS = "TOO_MANY_OPERATIONS"


class ApiError(Exception):
    """An error meant for the client: its message is shown, with ``extensions.code``."""

    code = INTERNAL_SERVER_ERROR

    def __init__(self, message: str, *, argument: str | None = None) -> None:
        super().__init__(message)
        self.argument = argument


class BadUserInput(ApiError):
    code = BAD_USER_INPUT

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"{argument}: {message}", argument=argument)


class NotFound(ApiError):
    code = NOT_FOUND


class ErrorCodes(MaskErrors):
    """Adds ``extensions.code`` to every error and masks unexpected ones."""

    def __init__(self) -> None:
        super().__init__(error_message="Internal server error")

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        return [self._process(error) for error in errors]

    def _process(self, error: GraphQLError) -> GraphQLError:
        extensions = dict(error.extensions or {})
        original = error.original_error
        if isinstance(original, ApiError):
            extensions["code"] = original.code
            if original.argument:
                extensions["argument"] = original.argument
        elif "code" in extensions:
            pass
        elif original is not None and is_unavailable(original):
            # The database is down or restarting: the client should retry (HTTP 503).
            log.warning("database unavailable in %s: %s", ".".join(
                str(p) for p in error.path or ()), describe(original))
            extensions["code"] = SERVICE_UNAVAILABLE
            error.message = UNAVAILABLE_MESSAGE
        elif original is None or error.path is None:
            # Syntax, validation or variable coercion: the request itself is wrong.
            extensions["code"] = BAD_USER_INPUT
        else:
            request_id = self._request_id()
            log.error("unexpected error in %s (request id %s)", ".".join(
                str(p) for p in error.path), request_id, exc_info=original)
            masked = self.anonymise_error(error)
            masked.message = f"Internal server error (request id {request_id})"
            masked.extensions = {"code": INTERNAL_SERVER_ERROR, "requestId": request_id}
            return masked
        error.extensions = extensions
        error.message = bounded(error.message)
        return error

    def _request_id(self) -> str:
        context = self.execution_context.context
        return str(getattr(context, "request_id", "-"))
