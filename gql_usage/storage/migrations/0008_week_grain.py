from tortoise import migrations
from tortoise.migrations import operations as ops

# The week grain (gql_usage.storage.models.CUBE_SETS): 7-day units (t a multiple of
# 604,800 s: Thursday 00:00 UTC), totals and each single dimension, so that a long range's
# totals and breakdowns read a row per week instead of per day. Compaction builds them
# from now on; this builds those of the cubes that exist, from their day rows: a week
# unit is seven whole day units, so its rows are the sums of its days' rows of the same
# grouping set and dimension values, and both hold the same folded events (pending events
# are folded into both by later rounds; readers add them meanwhile). One statement, one
# snapshot. No ON CONFLICT: a week row that exists already would be counted twice, so the
# statement fails instead (it cannot, unless a compactor of this version ran before the
# migration did). Grouped by account_id, as Citus needs to run it shard by shard
# (usage_cube is distributed by account_id; the rows go to the shard they came from).
# Servers of the previous version must not compact once this has run: they would fold
# pending events into days but not weeks.

WEEK_S, DAY_S = 7 * 86_400, 86_400
COLUMNS = "api_key_id, endpoint_id, source_id, user_id"
BACKFILL = (
    f"INSERT INTO usage_cube (account_id, grain, dims, t, {COLUMNS}, calls, credits)"
    f" SELECT account_id, {WEEK_S}, dims, (t / {WEEK_S}) * {WEEK_S}, {COLUMNS},"
    " SUM(calls), SUM(credits) FROM usage_cube"
    f" WHERE grain = {DAY_S} AND dims IN (0, 1, 2, 4, 8)"
    f" GROUP BY account_id, dims, (t / {WEEK_S}) * {WEEK_S}, {COLUMNS}"
)


class Migration(migrations.Migration):
    dependencies = [('models', '0007_cube_accounts')]

    initial = False

    operations = [
        ops.RunSQL(BACKFILL, f"DELETE FROM usage_cube WHERE grain = {WEEK_S}"),
    ]
