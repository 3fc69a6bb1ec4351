from typing import Any

from tortoise import migrations
from tortoise.migrations import operations as ops

# Access tokens for partners (SPEC 6.4, docs/access-tokens.md):
#
# access_token: one row per token an admin created, with the SHA-256 of its secret
# (never the secret), its display prefix, its creator, and its times in microseconds
# since the epoch (created, expires: NULL never, last used: written at most once a
# minute, revoked: NULL while valid). A plain SQL table, like usage_alert (0005): the
# model gql_usage.storage.models.AccessToken only reads its rows; gql_usage.storage.
# access_tokens and gql_usage.auth read and write it with SQL.
#
# Tenant table: every key includes account_id (a Citus distribution column). On
# PostgreSQL the primary key is (account_id, id); SQLite's autoincrement needs id alone.
# The token is looked up by its hash (gql_usage.auth), which leads the unique key
# access_token_secret; the creator is not a foreign key (app_user's key is id alone, and
# a removed creator must leave the row to say why its token is refused).

_COLUMNS = (
    "account_id INT NOT NULL, external_id VARCHAR(36) NOT NULL, "
    "name VARCHAR(255) NOT NULL, prefix VARCHAR(16) NOT NULL, "
    "secret_hash VARCHAR(64) NOT NULL, created_by_id INT, created_at_us BIGINT NOT NULL, "
    "expires_at_us BIGINT, last_used_at_us BIGINT, revoked_at_us BIGINT, "
    "CONSTRAINT access_token_external UNIQUE (account_id, external_id), "
    "CONSTRAINT access_token_secret UNIQUE (secret_hash, account_id)"
)
POSTGRES = [
    f"CREATE TABLE access_token (id BIGSERIAL NOT NULL, {_COLUMNS}, "
    "PRIMARY KEY (account_id, id))",
]
SQLITE = [
    f"CREATE TABLE access_token (id INTEGER PRIMARY KEY AUTOINCREMENT, {_COLUMNS})",
]


async def forward(apps: Any, schema_editor: Any) -> None:
    client = schema_editor.client
    postgres = client.capabilities.dialect == "postgres"
    for statement in POSTGRES if postgres else SQLITE:
        await client.execute_script(statement)


async def backward(apps: Any, schema_editor: Any) -> None:
    await schema_editor.client.execute_script("DROP TABLE access_token")


class Migration(migrations.Migration):
    dependencies = [('models', '0005_alerts')]

    initial = False

    operations = [
        ops.RunPython(forward, backward),
    ]
