from tortoise import fields, migrations
from tortoise.migrations import operations as ops

# The credit pool ahead (SPEC 6.3):
#
# - api_key.last_used_at_us: occurred_at_us of the key's newest event, kept by ingestion
#   in the statement (PostgreSQL) or transaction (SQLite) that stores the events, so that
#   ApiKey.lastUsedAt reads no events. Filled here from the events already stored.
# - api_key.credit_budget: credits per billing period (NULL: no budget).
# - account.alert_thresholds: percents, sorted JSON text (gql_usage.storage.thresholds).

BACKFILL_LAST_USED = (
    "UPDATE api_key SET last_used_at_us = newest.t FROM (SELECT api_key_id, "
    "MAX(occurred_at_us) AS t FROM usage_event GROUP BY api_key_id) AS newest "
    "WHERE api_key.id = newest.api_key_id"
)


class Migration(migrations.Migration):
    dependencies = [('models', '0003_optional_user_event_lookup')]

    initial = False

    operations = [
        ops.AddField(
            model_name='Account',
            name='alert_thresholds',
            field=fields.TextField(default='[80, 100]', db_default='[80, 100]'),
        ),
        ops.AddField(
            model_name='ApiKey',
            name='credit_budget',
            field=fields.BigIntField(null=True),
        ),
        ops.AddField(
            model_name='ApiKey',
            name='last_used_at_us',
            field=fields.BigIntField(null=True),
        ),
        ops.RunSQL(BACKFILL_LAST_USED),
    ]
