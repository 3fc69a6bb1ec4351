"""``gql-usage``: serve, token, export-schema, migrate."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from gql_usage import demo_secrets
from gql_usage.calendar import HOUR_S
from gql_usage.settings import MissingSetting, Settings, load_settings

if TYPE_CHECKING:
    from starlette.types import ASGIApp


#: The ASGI application factory each uvicorn worker process imports.
WORKER_APP = "gql_usage.cli:serve_app"
#: How ``serve --demo --workers N`` hands its workers the token GraphiQL is pre-filled
#: with (set by --demo only; the page is public).
DEMO_IDE_TOKEN_ENV = "GQL_USAGE_DEMO_IDE_TOKEN"


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    """Migrate once (here, in the parent), then run uvicorn with ``--workers`` processes."""
    import uvicorn

    from gql_usage import logs
    from gql_usage.app import create_app
    from gql_usage.http import server
    from gql_usage.storage.db import run_migrations

    logs.configure(settings.log_format, settings.log_level)
    ide_token = None
    if args.demo:
        settings, ide_token = _prepare_demo(settings)  # connects, which migrates first
    else:
        settings.require("jwt_secret", "service_token")
        if args.migrate:
            asyncio.run(run_migrations(settings.database_url))
    options: dict[str, Any] = {
        "host": args.host, "port": args.port, "log_level": settings.log_level.lower(),
        # our handler (gql_usage.logs) formats uvicorn's records; our AccessLog replaces
        # uvicorn's access log; no WebSockets (we serve no subscriptions); h11 with a
        # header timeout, a connection cap and lingering close (gql_usage.http.server)
        "log_config": None, "access_log": False, "ws": "none", "http": server.PROTOCOL,
        "proxy_headers": args.proxy_headers, "forwarded_allow_ips": args.forwarded_allow_ips}
    if args.workers == 1:
        server.install(settings)
        uvicorn.run(create_app(settings, migrate=False, ide_token=ide_token, tune_gc=True),
                    **options)
    else:
        # Worker processes are spawned and read their settings from the environment:
        # hand them what --demo generated.
        os.environ["GQL_USAGE_JWT_SECRET"] = str(settings.jwt_secret)
        os.environ["GQL_USAGE_SERVICE_TOKEN"] = str(settings.service_token)
        if ide_token is not None:
            os.environ[DEMO_IDE_TOKEN_ENV] = ide_token
        uvicorn.run(WORKER_APP, factory=True, workers=args.workers, **options)
    return 0


def serve_app() -> ASGIApp:
    """The app of one uvicorn worker (settings from the environment, no migrations).

    For running uvicorn or gunicorn directly, after ``gql-usage migrate``:
    ``uvicorn --factory gql_usage.cli:serve_app --http gql_usage.http.server:GuardedH11Protocol
    --workers 4``.
    """
    from gql_usage import logs
    from gql_usage.app import create_app
    from gql_usage.http import server

    settings = load_settings()
    logs.configure(settings.log_format, settings.log_level)
    server.install(settings)  # the limits of gql_usage.http.server.PROTOCOL in this worker
    return create_app(settings, migrate=False, ide_token=os.environ.get(DEMO_IDE_TOKEN_ENV),
                      tune_gc=True)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def _prepare_demo(settings: Settings) -> tuple[Settings, str]:
    """Fill an empty database with the demo organisation and print ready-to-use tokens;
    the paid admin's is returned too, for GraphiQL's token field."""
    from gql_usage.demo import seed_demo
    from gql_usage.storage.db import close_db, init_db

    updates: dict[str, object] = {}
    if not settings.jwt_secret or not settings.service_token:
        kept = demo_secrets.load_or_create(settings.database_url)
        updates["jwt_secret"] = settings.jwt_secret or kept.jwt_secret
        updates["service_token"] = settings.service_token or kept.service_token
    settings = settings.model_copy(update=updates)

    async def seed() -> dict[str, str]:
        await init_db(settings.database_url)
        try:
            print("Preparing demo data (first run takes a little while)...", flush=True)
            info = await seed_demo()
            return info.tokens(str(settings.jwt_secret))
        finally:
            await close_db()

    tokens = asyncio.run(seed())
    print("\nDemo tokens (GraphiQL at /graphql starts with paid_admin's; paste another "
          "into its Token field):")
    for label, token in tokens.items():
        print(f"  {label}:\n    {token}")
    print(f"\nService token: {settings.service_token}")
    print(f"JWT secret:    {settings.jwt_secret}")
    if updates:
        print(f"(both kept in {demo_secrets.secrets_path(settings.database_url)} for the "
              "next start; `gql-usage token --user U --account A` signs with it)")
    print(flush=True)
    return settings, tokens["paid_admin"]


def _token(args: argparse.Namespace, settings: Settings) -> int:
    from gql_usage.auth import issue_token

    secret = settings.jwt_secret
    if not secret:  # the demo's, when `serve --demo` ran against this database
        kept = demo_secrets.load(settings.database_url)
        secret = kept.jwt_secret if kept else None
    if not secret:
        settings.require("jwt_secret")
    print(issue_token(str(secret), args.user, args.account, args.ttl))
    return 0


def _export_schema(args: argparse.Namespace, settings: Settings) -> int:
    from gql_usage.graphql.schema import schema

    sys.stdout.write(schema.as_str() + "\n")
    return 0


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from gql_usage.storage.db import run_migrations

    asyncio.run(run_migrations(settings.database_url))
    print("migrations applied")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gql-usage", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--demo", action="store_true",
                       help="fill an empty database with demo data and print tokens")
    serve.add_argument("--workers", type=_positive_int, default=1,
                       help="uvicorn worker processes (default 1; about one per core)")
    serve.add_argument("--no-migrate", dest="migrate", action="store_false",
                       help="don't apply migrations first (when `gql-usage migrate` ran)")
    serve.add_argument("--proxy-headers", action="store_true",
                       help="trust X-Forwarded-For/-Proto from --forwarded-allow-ips")
    serve.add_argument("--forwarded-allow-ips", default=None, metavar="IPS",
                       help="comma-separated proxy addresses/networks to trust, or '*' "
                            "(default: $FORWARDED_ALLOW_IPS, else 127.0.0.1)")
    serve.set_defaults(func=_serve)
    token = sub.add_parser("token", help="print a signed user JWT")
    token.add_argument("--user", required=True, help="user external id (sub)")
    token.add_argument("--account", required=True, help="account external id (acc)")
    token.add_argument("--ttl", type=int, default=HOUR_S, help="seconds until expiry")
    token.set_defaults(func=_token)
    export = sub.add_parser("export-schema", help="print the GraphQL SDL")
    export.set_defaults(func=_export_schema)
    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.set_defaults(func=_migrate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = load_settings()
        return int(args.func(args, settings))
    except MissingSetting as exc:
        print(f"gql-usage: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
