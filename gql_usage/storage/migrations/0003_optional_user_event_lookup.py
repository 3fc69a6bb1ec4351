from typing import Any

from tortoise import migrations
from tortoise.migrations import operations as ops

# Two changes to usage_event, one migration (SQLite rebuilds the table once for both):
#
# 1. user_id becomes nullable: a call made without a user (server to server) is stored
#    with user_id NULL. The cube and the pending table keep NOT NULL columns and store
#    such a call under user id 0 (no real id is 0), so the cube's primary key holds.
# 2. The unique key (account_id, event_id) becomes the unique index
#    usage_event_event_account on (event_id, account_id): same uniqueness, and the
#    ingestion's duplicate lookup (gql_usage.ingest) matches the account only inside a row
#    comparison led by event_id, which no other index can serve, so that no statistics
#    can lead the planner to read an account's every row per resent event through the
#    (account_id, occurred_at_us) index.

POSTGRES = [
    "ALTER TABLE usage_event ALTER COLUMN user_id DROP NOT NULL",
    "CREATE UNIQUE INDEX usage_event_event_account ON usage_event (event_id, account_id)",
    "ALTER TABLE usage_event DROP CONSTRAINT IF EXISTS uid_usage_event_account_f13220",
]
_COLUMNS = ("id, account_id, event_id, api_key_id, endpoint_id, source_id, user_id, credits, "
            "occurred_at_us, received_at_us")
SQLITE = [
    'CREATE TABLE "usage_event_new" ('
    '"id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, "account_id" INT NOT NULL, '
    '"event_id" VARCHAR(128) NOT NULL, "api_key_id" INT NOT NULL, '
    '"endpoint_id" INT NOT NULL, "source_id" INT NOT NULL, "user_id" INT, '
    '"credits" BIGINT NOT NULL, "occurred_at_us" BIGINT NOT NULL, '
    '"received_at_us" BIGINT NOT NULL)',
    f"INSERT INTO usage_event_new ({_COLUMNS}) SELECT {_COLUMNS} FROM usage_event",
    "DROP TABLE usage_event",
    "ALTER TABLE usage_event_new RENAME TO usage_event",
    "CREATE UNIQUE INDEX usage_event_event_account ON usage_event (event_id, account_id)",
    'CREATE INDEX "usage_event_acc_time" ON "usage_event" ("account_id", "occurred_at_us")',
]


async def forward(apps: Any, schema_editor: Any) -> None:
    client = schema_editor.client
    postgres = client.capabilities.dialect == "postgres"
    for statement in POSTGRES if postgres else SQLITE:
        await client.execute_script(statement)


class Migration(migrations.Migration):
    dependencies = [('models', '0002_usage_cube')]

    initial = False

    operations = [
        ops.RunPython(forward),
    ]
