"""Liveness (``/healthz``) and readiness (``/readyz``) probes (see README, "Probes")."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.migrations.loader import MigrationLoader
from tortoise.migrations.recorder import MigrationRecorder

from gql_usage.http.errors import SERVICE_UNAVAILABLE
from gql_usage.storage.db import connection, tortoise_config

log = logging.getLogger("gql_usage.http")


async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


class Readiness:
    """``GET /readyz`` (``Readiness().endpoint``): 200 when the database answers and
    every migration shipped in ``gql_usage/storage/migrations`` is recorded as applied; 503 with
    the reason otherwise. Tortoise's own migration loader and recorder tell which."""

    def __init__(self, app_label: str = "models") -> None:
        apps = tortoise_config("sqlite://:memory:")["apps"]
        loader = MigrationLoader(apps, recorder=None)  # type: ignore[arg-type]
        loader.load_disk()  # Tortoise's own discovery of migration files
        self.app_label = app_label
        self.expected = sorted(key.name for key in loader.disk_migrations
                               if key.app_label == app_label)
        self._recorder: MigrationRecorder | None = None

    async def endpoint(self, request: Request) -> Response:
        try:
            conn = connection()
            await conn.execute_query("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            log.warning("readiness: database unreachable: %s", exc)
            return self._unready(f"database unreachable ({type(exc).__name__})")
        applied = {key.name for key in await self._recorder_of(conn).applied_migrations()
                   if key.app_label == self.app_label}
        if not applied:  # the recorder reads a missing table as none applied
            log.warning("readiness: no migrations recorded as applied")
            return self._unready("no migrations applied", pending=self.expected)
        pending = [name for name in self.expected if name not in applied]
        if pending:
            return self._unready("migrations not applied", pending=pending)
        return JSONResponse({"status": "ok", "migrations": self.expected})

    def _recorder_of(self, conn: BaseDBAsyncClient) -> MigrationRecorder:
        """The recorder on ``conn``, kept while the connection is (making one defines a
        model class: about 4 ms)."""
        if self._recorder is None or self._recorder.connection is not conn:
            self._recorder = MigrationRecorder(conn)
        return self._recorder

    @staticmethod
    def _unready(reason: str, **detail: Iterable[str]) -> Response:
        body: dict[str, Any] = {"status": "unavailable", "reason": reason,
                                "error": f"not ready: {reason}", "code": SERVICE_UNAVAILABLE}
        body.update({key: list(value) for key, value in detail.items()})
        return JSONResponse(body, status_code=503)
