from tortoise import migrations
from tortoise.migrations import operations as ops

# The cube and the pending events are plain SQL tables, not Tortoise models: the cube is
# keyed by its natural composite primary key (Tortoise has no composite keys, and a
# surrogate id would cost an index on every write), and the pending table has no index
# at all (it is only ever appended to and drained whole). Both are read and written with
# SQL by gql_usage.storage.cube, gql_usage.ingest and gql_usage.analytics.

CREATE_CUBE = (
    "CREATE TABLE usage_cube ("
    "account_id INT NOT NULL, grain INT NOT NULL, dims SMALLINT NOT NULL, "
    "api_key_id INT NOT NULL, endpoint_id INT NOT NULL, source_id INT NOT NULL, "
    "user_id INT NOT NULL, t BIGINT NOT NULL, calls BIGINT NOT NULL, credits BIGINT NOT NULL, "
    "PRIMARY KEY (account_id, grain, dims, api_key_id, endpoint_id, source_id, user_id, t))"
)
CREATE_PENDING = (
    "CREATE TABLE usage_pending ("
    "account_id INT NOT NULL, api_key_id INT NOT NULL, endpoint_id INT NOT NULL, "
    "source_id INT NOT NULL, user_id INT NOT NULL, credits BIGINT NOT NULL, "
    "occurred_at_us BIGINT NOT NULL)"
)
# Existing events are folded into the cube by compaction (gql_usage.storage.cube.compact), which
# the server runs in the background from its first start.
BACKFILL = (
    "INSERT INTO usage_pending (account_id, api_key_id, endpoint_id, source_id, user_id, "
    "credits, occurred_at_us) SELECT account_id, api_key_id, endpoint_id, source_id, "
    "user_id, credits, occurred_at_us FROM usage_event"
)


class Migration(migrations.Migration):
    dependencies = [('models', '0001_initial')]

    initial = False

    operations = [
        ops.RunSQL(CREATE_CUBE, "DROP TABLE usage_cube"),
        ops.RunSQL(CREATE_PENDING, "DROP TABLE usage_pending"),
        ops.RunSQL(BACKFILL),
        ops.DeleteModel(name='UsageRollup'),
    ]
