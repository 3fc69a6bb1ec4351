"""The secrets and settings every test app and test server shares."""

from __future__ import annotations

from gql_usage.settings import Settings

JWT_SECRET = "test-jwt-secret-0123456789abcdef0123456789"
SERVICE_TOKEN = "test-service-token"
BACKENDS = ["sqlite", "postgres"]


def make_settings(url: str, **overrides: object) -> Settings:
    return Settings(database_url=url, jwt_secret=JWT_SECRET, service_token=SERVICE_TOKEN,
                    **overrides)  # type: ignore[arg-type]
