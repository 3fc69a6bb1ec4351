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
