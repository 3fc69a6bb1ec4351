"""Service API for the vendor's own systems: reference-data upserts and event ingestion.

``PUT`` routes are idempotent upserts keyed by the vendor's ids; ``POST /v1/usage-events``
takes a JSON array or NDJSON and answers per event (see ``gql_usage.ingest``).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr
from pydantic import ValidationError as PydanticValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from gql_usage import calendar
from gql_usage.auth import service_token_ok
from gql_usage.http import (
    BAD_USER_INPUT,
    NOT_FOUND,
    PAYLOAD_TOO_LARGE,
    UNAUTHENTICATED,
    UNSUPPORTED_MEDIA_TYPE,
)
from gql_usage.ingest import (
    BatchTooLarge,
    BodyError,
    Ingestor,
    decode_batch,
    describe_validation_error,
)
from gql_usage.models import Account, ApiKey, Plan, Role, User
from gql_usage.settings import Settings


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or ``BodyTooLarge`` as soon as it passes ``limit`` (never read whole)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


#: The code of each status the service API answers with.
ERROR_CODES = {400: BAD_USER_INPUT, 401: UNAUTHENTICATED, 404: NOT_FOUND,
               413: PAYLOAD_TOO_LARGE, 415: UNSUPPORTED_MEDIA_TYPE, 422: BAD_USER_INPUT}


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    """``{"error": message, "code": ...}`` with the code of ``status``."""
    return JSONResponse({"error": message, "code": ERROR_CODES[status], **extra},
                        status_code=status)


#: Body types read as JSON besides ``application/json``: none declared, or plain text
#: (some HTTP clients label any string body so).
LENIENT_TYPES = ("", "text/plain")


def unsupported_media_type(request: Request, *, ndjson: bool) -> Response | None:
    """415 when the request declares a body type that is not JSON (or NDJSON where
    ``ndjson``): a form, multipart or XML body is a client's mistake, named as such."""
    declared = request.headers.get("content-type", "")
    essence = declared.split(";", 1)[0].strip().lower()
    if essence in ("application/json", *LENIENT_TYPES) or (
            ndjson and ("ndjson" in essence or "jsonl" in essence)):
        return None
    wanted = ("application/json or application/x-ndjson" if ndjson
              else "application/json")
    return error(415, f"Content-Type must be {wanted}, not {declared[:100]!r}")


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("must carry a UTC offset (RFC 3339)")
    return value


def _tz(value: str) -> str:
    calendar.zone(value)
    return value


Aware = Annotated[datetime, AfterValidator(_aware)]
Name = Annotated[StrictStr, Field(min_length=1, max_length=255)]


class AccountIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    plan: Plan
    timeZone: Annotated[StrictStr, AfterValidator(_tz)] = "UTC"
    creditsGranted: Annotated[StrictInt, Field(ge=0)] = 0
    periodStart: Aware
    periodEnd: Aware


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    email: Annotated[StrictStr, Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]
    role: Role


class ApiKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    prefix: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    createdBy: StrictStr | None = None
    createdAt: Aware
    revokedAt: Aware | None = None


class ServiceApi:
    def __init__(self, settings: Settings, ingestor: Ingestor) -> None:
        self.settings = settings
        self.ingestor = ingestor

    def routes(self) -> list[Route]:
        return [
            Route("/v1/accounts/{accountId}", self.put_account, methods=["PUT"]),
            Route("/v1/accounts/{accountId}/users/{userId}", self.put_user, methods=["PUT"]),
            Route("/v1/accounts/{accountId}/api-keys/{keyId}", self.put_api_key,
                  methods=["PUT"]),
            Route("/v1/usage-events", self.post_events, methods=["POST"]),
        ]

    def _authorized(self, request: Request) -> bool:
        return bool(self.settings.service_token) and service_token_ok(
            str(self.settings.service_token), request.headers.get("authorization"))

    async def _json_body(self, request: Request, model: type[BaseModel]) -> BaseModel | Response:
        if not self._authorized(request):
            return error(401, "invalid or missing service token")
        if (refusal := unsupported_media_type(request, ndjson=False)) is not None:
            return refusal
        try:
            body = await read_body(request, self.settings.max_body_bytes)
        except BodyTooLarge:
            return error(413, f"body exceeds {self.settings.max_body_bytes} bytes")
        for name, value in request.path_params.items():  # ids in the path
            if not 0 < len(value) <= 128 or "\x00" in value or not value.strip():
                return error(422, f"{name}: must be 1 to 128 characters, not blank, "
                             "without NUL (\\u0000)")
        try:
            parsed = model.model_validate(json.loads(body))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return error(400, "body is not valid JSON")
        except PydanticValidationError as exc:
            return error(422, describe_validation_error(exc))
        for name, value in parsed.model_dump().items():  # no database stores NUL in text
            if isinstance(value, str) and "\x00" in value:
                return error(422, f"{name}: must not contain NUL (\\u0000) characters")
        return parsed

    async def put_account(self, request: Request) -> Response:
        parsed = await self._json_body(request, AccountIn)
        if isinstance(parsed, Response):
            return parsed
        assert isinstance(parsed, AccountIn)
        if parsed.periodEnd <= parsed.periodStart:
            return error(422, "periodEnd: must be after periodStart")
        external_id = str(request.path_params["accountId"])
        values = {"name": parsed.name, "plan": parsed.plan, "time_zone": parsed.timeZone,
                  "credits_granted": parsed.creditsGranted, "period_start": parsed.periodStart,
                  "period_end": parsed.periodEnd}
        created = await _upsert(Account, {"external_id": external_id}, values)
        return JSONResponse({"id": external_id, "created": created},
                            status_code=201 if created else 200)

    async def put_user(self, request: Request) -> Response:
        parsed = await self._json_body(request, UserIn)
        if isinstance(parsed, Response):
            return parsed
        assert isinstance(parsed, UserIn)
        account = await Account.get_or_none(external_id=request.path_params["accountId"])
        if account is None:
            return error(404, f"unknown account {request.path_params['accountId']!r}")
        external_id = str(request.path_params["userId"])
        created = await _upsert(User, {"account_id": account.id, "external_id": external_id},
                                {"name": parsed.name, "email": parsed.email, "role": parsed.role})
        return JSONResponse({"id": external_id, "created": created},
                            status_code=201 if created else 200)

    async def put_api_key(self, request: Request) -> Response:
        parsed = await self._json_body(request, ApiKeyIn)
        if isinstance(parsed, Response):
            return parsed
        assert isinstance(parsed, ApiKeyIn)
        account = await Account.get_or_none(external_id=request.path_params["accountId"])
        if account is None:
            return error(404, f"unknown account {request.path_params['accountId']!r}")
        creator_id = None
        if parsed.createdBy is not None:
            creator = await User.get_or_none(account_id=account.id, external_id=parsed.createdBy)
            if creator is None:
                return error(422, f"createdBy: unknown user {parsed.createdBy!r} of this account")
            creator_id = creator.id
        external_id = str(request.path_params["keyId"])
        created = await _upsert(
            ApiKey, {"account_id": account.id, "external_id": external_id},
            {"name": parsed.name, "prefix": parsed.prefix, "created_by_id": creator_id,
             "created_at": parsed.createdAt, "revoked_at": parsed.revokedAt})
        return JSONResponse({"id": external_id, "created": created},
                            status_code=201 if created else 200)

    async def post_events(self, request: Request) -> Response:
        if not self._authorized(request):
            return error(401, "invalid or missing service token")
        if (refusal := unsupported_media_type(request, ndjson=True)) is not None:
            return refusal
        try:
            body = await read_body(request, self.settings.max_body_bytes)
        except BodyTooLarge:
            return error(413, f"body exceeds {self.settings.max_body_bytes} bytes; "
                         "send smaller batches")
        try:
            items = decode_batch(body, request.headers.get("content-type", ""),
                                 self.settings.max_batch_events)
        except BatchTooLarge as exc:
            return error(413, str(exc), code="BATCH_TOO_LARGE", maxEvents=exc.max_events)
        except BodyError as exc:
            return error(400, str(exc))
        result = await self.ingestor.ingest(items)
        return JSONResponse(result.as_json())


async def _upsert(model: Any, keys: dict[str, Any], values: dict[str, Any]) -> bool:
    """Insert or update one row by its natural key; safe against concurrent upserts."""
    for attempt in range(3):
        try:
            async with in_transaction("default"):
                row = await model.filter(**keys).select_for_update().first()
                if row is None:
                    await model.create(**keys, **values)
                    return True
                await model.filter(id=row.id).update(**values)
                return False
        except IntegrityError:
            if attempt == 2:
                raise
    return False
