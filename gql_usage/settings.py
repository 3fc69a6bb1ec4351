"""Configuration from the environment (``GQL_USAGE_*``), read once per process."""

from __future__ import annotations

import json
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite://gql_usage.sqlite3"


class MissingSetting(RuntimeError):
    """A required setting is absent; the message names the environment variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GQL_USAGE_", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    jwt_secret: str | None = None
    service_token: str | None = None
    #: Largest accepted request body on the service API, in bytes.
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    #: Largest number of events in one ingestion batch.
    max_batch_events: int = Field(default=10_000, gt=0)
    #: Events stamped further than this in the future are rejected (clock skew allowance).
    max_future_seconds: int = Field(default=300, ge=0)
    #: Largest GraphQL request body, in bytes.
    max_graphql_body_bytes: int = Field(default=256 * 1024, gt=0)

    # --- GraphQL query limits and rate limit (gql_usage/graphql/limits/) -------------
    #: Deepest selection nesting accepted.
    max_query_depth: int = Field(default=12, gt=0)
    #: Most aliases in one document.
    max_aliases: int = Field(default=30, gt=0)
    #: Most tokens in one document.
    max_tokens: int = Field(default=2000, gt=0)
    #: Highest static cost of one operation, in points.
    max_query_cost: int = Field(default=5000, gt=0)
    #: Cost points each viewer may spend per minute.
    rate_limit_points: int = Field(default=50_000, gt=0)
    #: Where the rate-limit budgets are counted: "memory://" (each server process on its
    #: own) or Redis, "redis://host:port/db" (rediss://, unix://), shared by every process.
    rate_limit_storage_url: str = "memory://"
    #: Most operations in one batched GraphQL HTTP request.
    max_batch_operations: int = Field(default=10, gt=0)
    #: Whether schema introspection is allowed (switch off in production if wanted).
    introspection: bool = True

    # --- HTTP hygiene (gql_usage/http/, gql_usage/logs.py) -----------------------------
    #: Requests not answered within this many seconds get 503 (coded ``TIMEOUT``).
    request_timeout_seconds: float = Field(default=30.0, gt=0)
    #: Origins allowed to call the API from a browser (CORS); empty: none. The variable
    #: takes a comma-separated list or a JSON array.
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: A connection must deliver a complete request head (request line and headers)
    #: within this many seconds of opening, or of the previous response; else it is closed
    #: (408 ``TIMEOUT`` when part of a head arrived). See ``gql_usage/http/server.py``.
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    #: Most open connections per server process; at the cap, the oldest connection still
    #: waiting for a request head is closed to make room (or the new one, if none waits).
    max_connections: int = Field(default=1000, gt=0)
    #: Log format: "json" (one object per line) or "text".
    log_format: Literal["json", "text"] = "json"
    #: Level of every logger: DEBUG, INFO, WARNING, ERROR or CRITICAL.
    log_level: str = "INFO"

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"starts with '[' but is not a JSON array ({exc}); "
                                     "give a JSON array or comma-separated origins") from None
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins_are_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            parts = urlsplit(origin)
            if origin != "*" and (parts.scheme not in ("http", "https") or not parts.netloc
                                  or parts.path or parts.query or parts.fragment):
                raise ValueError(f"{origin!r} is not an origin such as "
                                 "https://dashboard.example.com (scheme, host, optional "
                                 "port; no path)")
        return value

    @field_validator("rate_limit_storage_url")
    @classmethod
    def _rate_limit_storage(cls, value: str) -> str:
        value = value.strip()
        scheme = urlsplit(value).scheme
        if value != "memory://" and scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"{value!r} is neither memory:// nor a Redis URL such as "
                             "redis://127.0.0.1:6379/0 (rediss://, unix:///path/redis.sock)")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, value: object) -> object:
        levels = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
        if isinstance(value, str) and value.strip().upper() in levels:
            return value.strip().upper()
        raise ValueError(f"{value!r} is not one of {', '.join(levels)}")

    # --- Faults and event age (gql_usage/http/service_api.py) --------------------------
    #: Events older than this are rejected; None (default) accepts any age (backfills).
    max_age_seconds: int | None = Field(default=None, gt=0)
    #: ``Retry-After`` sent with 503 when the database is unavailable.
    retry_after_seconds: int = Field(default=5, gt=0)

    @field_validator("max_age_seconds", mode="before")
    @classmethod
    def _age_off(cls, value: object) -> object:
        """``GQL_USAGE_MAX_AGE_SECONDS`` empty, ``none`` or ``off``: no maximum age."""
        if isinstance(value, str) and value.strip().lower() in ("", "none", "off"):
            return None
        return value

    # --- Cube compaction (gql_usage/storage/cube.py) --------------------------------------------
    #: Seconds between compaction rounds when nothing is pending.
    compact_interval_seconds: float = Field(default=0.5, gt=0)

    # --- Read replica (gql_usage/storage/db.py) ------------------------------------------------
    #: Optional PostgreSQL streaming replica that analytics reads are routed to.
    replica_database_url: str | None = None

    @field_validator("replica_database_url")
    @classmethod
    def _replica_is_postgres(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not value:
            return None
        postgres = ("postgres://", "asyncpg://", "psycopg://")
        if not value.startswith(postgres):
            raise ValueError("must be a PostgreSQL URL (postgres://user:pass@host:5432/db)")
        if not str(info.data.get("database_url", "")).startswith(postgres):
            raise ValueError("needs GQL_USAGE_DATABASE_URL to be a PostgreSQL URL too "
                             "(a replica streams from a PostgreSQL primary)")
        return value

    # --- Alert webhooks (gql_usage/alerts/; README "Alerts and webhooks") ----------------
    #: Where alerts are POSTed; unset: alerts are recorded (``Account.alerts``) but not sent.
    webhook_url: str | None = None
    #: HMAC-SHA256 key of the ``Gql-Usage-Signature`` header; required with a URL.
    webhook_secret: str | None = None
    #: Longest wait for a receiver's answer, in all (connect, send, answer).
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    #: Wait before the first retry (doubling per failure, with jitter, up to the cap).
    webhook_retry_base_seconds: float = Field(default=10.0, gt=0)
    #: Longest wait between two attempts.
    webhook_retry_max_seconds: float = Field(default=3600.0, gt=0)
    #: How often a server looks for due alerts (its own are sent at once; this picks up
    #: retries and alerts recorded by other processes).
    webhook_poll_seconds: float = Field(default=5.0, gt=0)

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if not value or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{value!r} is not an http(s) URL such as "
                             "https://hooks.example.com/gql-usage")
        return value.strip()

    def require(self, *names: str) -> None:
        """Stop with a one-line message naming the first missing required setting."""
        for name in names:
            if not getattr(self, name):
                raise MissingSetting(
                    f"missing required setting GQL_USAGE_{name.upper()} "
                    f"(set it in the environment, or run with --demo)"
                )


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:  # pragma: no cover - message formatting only
        first = exc.errors()[0]
        name = "GQL_USAGE_" + str(first["loc"][0]).upper()
        raise MissingSetting(f"invalid setting {name}: {first['msg']}") from None
