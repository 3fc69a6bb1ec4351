"""Service API (``/v1``) for the vendor's own systems: reference-data upserts and event
ingestion.

``PUT`` routes are idempotent upserts keyed by the vendor's ids; ``POST /v1/usage-events``
takes a JSON array or NDJSON and answers per event (see ``gql_usage.ingest``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import unquote_to_bytes

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr
from pydantic import ValidationError as PydanticValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tortoise.exceptions import IntegrityError

from gql_usage import calendar
from gql_usage.alerts.record import forget_stale_totals
from gql_usage.auth import service_token_ok
from gql_usage.http.errors import (
    HTTP_EXCEPTION_CODES,
)
from gql_usage.ingest.decode import BatchTooLarge, BodyError, decode_batch
from gql_usage.ingest.ingestor import Ingestor
from gql_usage.ingest.validate import describe_validation_error
from gql_usage.settings import Settings
from gql_usage.storage import thresholds
from gql_usage.storage.db import connection
from gql_usage.storage.models import Account, ApiKey, Plan, Role, User
from gql_usage.untrusted import MAX_ID_LENGTH, bounded, echo, id_problem, text_problem, utc_problem

#: Largest credit count (``SafeInt``: exact in JavaScript, fits every database column).
MAX_SAFE_INT = 2**53 - 1


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
def error(status: int, message: str, *, field: str | None = None,
          **extra: Any) -> JSONResponse:
    """``{"error": message, "code": ...}`` with the code of ``status`` (and ``field`` when
    one input is at fault); the message is bounded (``untrusted.bounded``), whatever it
    quotes."""
    body: dict[str, Any] = {"error": bounded(message), "code": HTTP_EXCEPTION_CODES[status]}
    if field is not None:
        body["field"] = field
    return JSONResponse({**body, **extra}, status_code=status)


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
    problem = utc_problem(value)  # stored in UTC: 0001-01-01T00:00:00+05:00 is year 0
    if problem:
        raise ValueError(problem)
    return value


def _tz(value: str) -> str:
    calendar.zone(value)
    return value


def _thresholds(values: list[int]) -> list[int]:
    problem = thresholds.problem(values)
    if problem:
        raise ValueError(problem)
    return sorted(values)


Aware = Annotated[datetime, AfterValidator(_aware)]
Name = Annotated[StrictStr, Field(min_length=1, max_length=255)]
#: Whole credits, within ``SafeInt``.
Credits = Annotated[StrictInt, Field(ge=0, le=MAX_SAFE_INT)]
#: Alert thresholds: percents of the pool (and of each key's budget), stored sorted.
Thresholds = Annotated[list[Annotated[StrictInt, Field(ge=thresholds.MIN_PERCENT,
                                                       le=thresholds.MAX_PERCENT)]],
                       Field(max_length=thresholds.MAX_THRESHOLDS),
                       AfterValidator(_thresholds)]


class AccountIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    plan: Plan
    timeZone: Annotated[StrictStr, AfterValidator(_tz)] = "UTC"
    creditsGranted: Annotated[StrictInt, Field(ge=0, le=MAX_SAFE_INT)] = 0
    periodStart: Aware
    periodEnd: Aware
    alertThresholds: Thresholds = list(thresholds.DEFAULT_THRESHOLDS)


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    email: Annotated[StrictStr, Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]
    role: Role


class ApiKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    prefix: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    createdBy: Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_LENGTH)] | None = None
    createdAt: Aware
    revokedAt: Aware | None = None
    #: Credits per billing period; null (or absent): no budget.
    creditBudget: Credits | None = None


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
        bad_path = path_problem(request)  # before the body: refused without reading it
        if bad_path is not None:
            param, wrong = bad_path
            return error(422, f"{param}: {wrong}", field=param)
        if (refusal := unsupported_media_type(request, ndjson=False)) is not None:
            return refusal
        try:
            body = await read_body(request, self.settings.max_body_bytes)
        except BodyTooLarge:
            return error(413, f"body exceeds {self.settings.max_body_bytes} bytes")
        try:
            decoded = json.loads(body)
        except (ValueError, RecursionError):  # also a number of more than 4,300 digits
            return error(400, "body is not valid JSON")
        try:
            parsed = model.model_validate(decoded)
        except PydanticValidationError as exc:
            errors = exc.errors()
            first = errors[0]["loc"][0] if errors and errors[0]["loc"] else None
            return error(422, describe_validation_error(exc),
                         field=first if isinstance(first, str) and first in model.model_fields
                         else None)
        for name, value in parsed.model_dump().items():  # what no database stores
            problem = text_problem(value) if isinstance(value, str) else None
            if problem:
                return error(422, f"{name}: {problem}", field=name)
        return parsed

    async def put_account(self, request: Request) -> Response:
        parsed = await self._json_body(request, AccountIn)
        if isinstance(parsed, Response):
            return parsed
        assert isinstance(parsed, AccountIn)
        if parsed.periodEnd <= parsed.periodStart:
            return error(422, "periodEnd: must be after periodStart", field="periodEnd")
        external_id = str(request.path_params["accountId"])
        values = {"name": parsed.name, "plan": parsed.plan, "time_zone": parsed.timeZone,
                  "credits_granted": parsed.creditsGranted, "period_start": parsed.periodStart,
                  "period_end": parsed.periodEnd,
                  "alert_thresholds": thresholds.dump(parsed.alertThresholds)}
        created = await _upsert(Account, {"external_id": external_id}, values)
        if not created:  # a new period's totals start again from its events
            account = await Account.get(external_id=external_id)
            await forget_stale_totals(connection(), account.id,
                                      calendar.to_us(account.period_start),
                                      calendar.to_us(account.period_end))
        return JSONResponse({"id": external_id, "created": created},
                            status_code=201 if created else 200)

    async def put_user(self, request: Request) -> Response:
        parsed = await self._json_body(request, UserIn)
        if isinstance(parsed, Response):
            return parsed
        assert isinstance(parsed, UserIn)
        account = await Account.get_or_none(external_id=request.path_params["accountId"])
        if account is None:
            return error(404, f"unknown account {echo(request.path_params['accountId'])}",
                         field="accountId")
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
        if parsed.revokedAt is not None and parsed.revokedAt < parsed.createdAt:
            return error(422, "revokedAt: must not be before createdAt", field="revokedAt")
        account = await Account.get_or_none(external_id=request.path_params["accountId"])
        if account is None:
            return error(404, f"unknown account {echo(request.path_params['accountId'])}",
                         field="accountId")
        creator_id = None
        if parsed.createdBy is not None:
            creator = await User.get_or_none(account_id=account.id, external_id=parsed.createdBy)
            if creator is None:
                return error(422, f"createdBy: unknown user {echo(parsed.createdBy)} of this "
                             "account", field="createdBy")
            creator_id = creator.id
        external_id = str(request.path_params["keyId"])
        created = await _upsert(
            ApiKey, {"account_id": account.id, "external_id": external_id},
            {"name": parsed.name, "prefix": parsed.prefix, "created_by_id": creator_id,
             "created_at": parsed.createdAt, "revoked_at": parsed.revokedAt,
             "credit_budget": parsed.creditBudget})
        if not created:
            key = await ApiKey.get(account_id=account.id, external_id=external_id)
            await forget_stale_totals(
                connection(), account.id, calendar.to_us(account.period_start),
                calendar.to_us(account.period_end),
                unbudgeted_key=key.id if key.credit_budget is None else None)
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


def path_problem(request: Request) -> tuple[str, str] | None:
    """(parameter, what is wrong) for the first bad id in the path, or None.

    The server percent-decodes the path as UTF-8 *with replacement*: ``%FF%FE`` and
    ``%FF%FD`` both arrive as ``\ufffd\ufffd``, two ids that would collide. So each
    parameter is decoded again, strictly, from the raw bytes (``scope["raw_path"]``),
    and an encoded ``/`` (``%2F``), which would shift the ids, is refused too."""
    route = request.scope.get("route")
    template = getattr(route, "path", None)
    raw = request.scope.get("raw_path")
    if isinstance(template, str) and isinstance(raw, bytes):
        parts = template.split("/")
        names = [p[1:-1].partition(":")[0] if p.startswith("{") else None for p in parts]
        raw_segments = raw.partition(b"?")[0].split(b"/")
        # The route's segments are the path's last ones (a root path may come first).
        offset = len(request.scope["path"].split("/")) - len(parts)
        for index, segment in enumerate(raw_segments):
            at = index - offset
            name = names[at] if 0 <= at < len(names) else None
            if b"%2f" in segment.lower():  # the segments after it no longer line up
                return name or "path", "must not contain '/' (%2F)"
            if name is None:
                continue
            try:
                unquote_to_bytes(segment).decode("utf-8")
            except UnicodeDecodeError:
                return name, "is not valid UTF-8 once percent-decoded"
    for name, value in request.path_params.items():
        problem = id_problem(str(value))
        if problem:
            return name, problem
    return None


async def _upsert(model: Any, keys: dict[str, Any], values: dict[str, Any]) -> bool:
    """Insert or update one row by its natural key; whether the row was created.

    An update of ``values`` alone, found by the natural key (which includes the account
    for users and keys: on Citus one shard, and the distribution column is never
    rewritten, which Citus refuses); if no row has the key, an insert, whose unique-key
    conflict with a concurrent insert falls back to the update."""
    values = {**values, **{name: datetime.now(UTC) for name, field in
                           model._meta.fields_map.items() if getattr(field, "auto_now", False)}}
    if await model.filter(**keys).update(**values):
        return False
    try:
        await model.create(**keys, **values)
    except IntegrityError:
        await model.filter(**keys).update(**values)
        return False
    return True
