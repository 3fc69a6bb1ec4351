from typing import Any

from tortoise import migrations
from tortoise.migrations import operations as ops

# Alerts (SPEC 6.3, README "Alerts and webhooks"):
#
# The settings alerts are computed from, api_key.credit_budget and
# account.alert_thresholds, come with 0004_pool.
#
# * usage_period_total: running credits per (account, key or 0 for the whole pool,
#   billing period), updated by ingestion in the transaction that stores the events; the
#   old and new totals say which thresholds a batch reached;
# * usage_alert: the alerts, at most one per (account, key or 0, threshold, period start)
#   (the UNIQUE key that concurrent ingestions insert-or-ignore against), each with its
#   webhook delivery state (the outbox of gql_usage.alerts.outbox).
#
# Both new tables are plain SQL tables, not models, like usage_cube (0002): a natural
# composite key, read and written with SQL only. Tenant tables: account_id first.

PERIOD_TOTAL = (
    "CREATE TABLE usage_period_total ("
    "account_id INT NOT NULL, api_key_id INT NOT NULL, period_start_us BIGINT NOT NULL, "
    "period_end_us BIGINT NOT NULL, credits BIGINT NOT NULL, added BIGINT NOT NULL, "
    "PRIMARY KEY (account_id, api_key_id, period_start_us, period_end_us))"
)
_ALERT_COLUMNS = (
    "uid VARCHAR(36) NOT NULL, account_id INT NOT NULL, api_key_id INT NOT NULL, "
    "kind VARCHAR(32) NOT NULL, threshold INT NOT NULL, used BIGINT NOT NULL, "
    "credit_limit BIGINT NOT NULL, period_start_us BIGINT NOT NULL, "
    "period_end_us BIGINT NOT NULL, occurred_at_us BIGINT NOT NULL, "
    "attempts INT NOT NULL DEFAULT 0, next_attempt_at_us BIGINT NOT NULL, "
    "last_attempt_at_us BIGINT, delivered_at_us BIGINT, last_error TEXT, "
    "CONSTRAINT usage_alert_once UNIQUE (account_id, api_key_id, threshold, period_start_us)"
)
POSTGRES = [
    PERIOD_TOTAL,
    f"CREATE TABLE usage_alert (id BIGSERIAL PRIMARY KEY, {_ALERT_COLUMNS})",
]
SQLITE = [
    PERIOD_TOTAL,
    f"CREATE TABLE usage_alert (id INTEGER PRIMARY KEY AUTOINCREMENT, {_ALERT_COLUMNS})",
]
INDEXES = [
    # Account.alerts, newest first.
    "CREATE INDEX usage_alert_account_time ON usage_alert (account_id, occurred_at_us)",
    # The outbox: undelivered alerts by when they are due.
    "CREATE INDEX usage_alert_due ON usage_alert (next_attempt_at_us) "
    "WHERE delivered_at_us IS NULL",
]


async def forward(apps: Any, schema_editor: Any) -> None:
    client = schema_editor.client
    postgres = client.capabilities.dialect == "postgres"
    for statement in (POSTGRES if postgres else SQLITE) + INDEXES:
        await client.execute_script(statement)


async def backward(apps: Any, schema_editor: Any) -> None:
    for table in ("usage_alert", "usage_period_total"):
        await schema_editor.client.execute_script(f"DROP TABLE {table}")


class Migration(migrations.Migration):
    dependencies = [('models', '0004_pool')]

    initial = False

    operations = [
        ops.RunPython(forward, backward),
    ]
