"""Configuration from the environment (``GQL_USAGE_*``), read once per process."""

from __future__ import annotations

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

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

    # --- GraphQL query limits and rate limit (gql_usage/graphql/limits.py) -------------
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
    #: Most operations in one batched GraphQL HTTP request.
    max_batch_operations: int = Field(default=10, gt=0)
    #: Whether schema introspection is allowed (switch off in production if wanted).
    introspection: bool = True

    # --- HTTP hygiene (gql_usage/http.py, gql_usage/logs.py) ---------------------------
    #: Requests taking longer than this are answered with 503.
    request_timeout_seconds: float = Field(default=30.0, gt=0)
    #: Origins allowed to call the API from a browser (CORS); empty: none.
    cors_origins: list[str] = Field(default_factory=list)
    #: Log format: "json" (one object per line) or "text".
    log_format: str = "json"
    log_level: str = "INFO"

    # --- Faults and event age (gql_usage/service_api.py) -------------------------------
    #: Events older than this are rejected; None (default) accepts any age (backfills).
    max_age_seconds: int | None = Field(default=None, gt=0)
    #: ``Retry-After`` sent with 503 when the database is unavailable.
    retry_after_seconds: int = Field(default=5, gt=0)

    # --- Read replica (gql_usage/db.py) ------------------------------------------------
    #: Optional PostgreSQL streaming replica that analytics reads are routed to.
    replica_database_url: str | None = None

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
