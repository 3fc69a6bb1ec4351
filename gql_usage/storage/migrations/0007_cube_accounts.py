from tortoise import migrations
from tortoise.migrations import operations as ops

# The adaptive cube (issue 14): an account's events are folded into usage_cube only once
# it has sent enough of them (gql_usage.storage.cube.CUBE_AFTER_EVENTS); until then its
# questions are answered from its raw events, which are few, and compaction only drops
# its pending copies. usage_cube_account holds, per account that compaction has seen,
# the events it dropped while the account was raw (events) and whether the account is
# in the cube (cubed: 0 or 1; once 1, for good). An account without a row is raw.
#
# Accounts that exist now stay in the cube (their cube rows and pending events are kept
# as they are): only accounts created after this migration start raw.

CREATE = ("CREATE TABLE usage_cube_account (account_id INT NOT NULL PRIMARY KEY, "
          "events BIGINT NOT NULL, cubed SMALLINT NOT NULL)")
EXISTING = "INSERT INTO usage_cube_account (account_id, events, cubed) SELECT id, 0, 1 FROM account"


class Migration(migrations.Migration):
    dependencies = [('models', '0006_access_tokens')]

    initial = False

    operations = [
        ops.RunSQL(CREATE, "DROP TABLE usage_cube_account"),
        ops.RunSQL(EXISTING, "DELETE FROM usage_cube_account"),
    ]
