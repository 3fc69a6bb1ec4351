"""Liveness (``/healthz``) and readiness (``/readyz``) probes."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from tortoise.migrations.loader import MigrationLoader

from gql_usage.db import Sql, Value, connection, dialect, tortoise_config
from gql_usage.http.errors import SERVICE_UNAVAILABLE

log = logging.getLogger("gql_usage.http")

# --- probes ------------------------------------------------------------------------------

async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


class Readiness:
    """``GET /readyz`` (``Readiness().endpoint``): 200 when the database answers and
    every migration shipped in ``gql_usage/migrations`` is recorded as applied; 503 with
    the reason otherwise."""

    def __init__(self, app_label: str = "models") -> None:
        apps = tortoise_config("sqlite://:memory:")["apps"]
        loader = MigrationLoader(apps, recorder=None)  # type: ignore[arg-type]
        loader.load_disk()  # Tortoise's own discovery of migration files
        self.app_label = app_label
        self.expected = sorted(key.name for key in loader.disk_migrations
                               if key.app_label == app_label)

    async def endpoint(self, request: Request) -> Response:
        try:
            conn = connection()
            await conn.execute_query("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            log.warning("readiness: database unreachable: %s", exc)
            return self._unready(f"database unreachable ({type(exc).__name__})")
        try:
            applied = await self._applied()
        except Exception as exc:  # noqa: BLE001 - no migrations table, for one
            log.warning("readiness: cannot read applied migrations: %s", exc)
            return self._unready("no migrations applied", pending=self.expected)
        pending = [name for name in self.expected if name not in applied]
        if pending:
            return self._unready("migrations not applied", pending=pending)
        return JSONResponse({"status": "ok", "migrations": self.expected})

    async def _applied(self) -> set[str]:
        sql = Sql(dialect()).add('SELECT "name" FROM "tortoise_migrations" WHERE "app" = ',
                                 Value(self.app_label))
        _, rows = await connection().execute_query(sql.text, sql.params)
        return {row["name"] for row in rows}

    @staticmethod
    def _unready(reason: str, **detail: Iterable[str]) -> Response:
        body: dict[str, Any] = {"status": "unavailable", "reason": reason,
                                "error": f"not ready: {reason}", "code": SERVICE_UNAVAILABLE}
        body.update({key: list(value) for key, value in detail.items()})
        return JSONResponse(body, status_code=503)
