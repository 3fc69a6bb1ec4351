from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0001_initial')]

    initial = False

    operations = [
        ops.CreateModel(
            name='UsageCube',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('account_id', fields.IntField()),
                ('grain', fields.IntField()),
                ('dims', fields.SmallIntField()),
                ('t', fields.BigIntField()),
                ('api_key_id', fields.IntField()),
                ('endpoint_id', fields.IntField()),
                ('source_id', fields.IntField()),
                ('user_id', fields.IntField()),
                ('calls', fields.BigIntField()),
                ('credits', fields.BigIntField()),
            ],
            options={'table': 'usage_cube', 'app': 'models', 'unique_together': (('account_id', 'grain', 'dims', 'api_key_id', 'endpoint_id', 'source_id', 'user_id', 't'),), 'pk_attr': 'id', 'table_description': 'Calls and credits per account, grain, grouping set, time unit and dimension values.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='UsagePending',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('account_id', fields.IntField()),
                ('api_key_id', fields.IntField()),
                ('endpoint_id', fields.IntField()),
                ('source_id', fields.IntField()),
                ('user_id', fields.IntField()),
                ('credits', fields.BigIntField()),
                ('occurred_at_us', fields.BigIntField()),
            ],
            options={'table': 'usage_pending', 'app': 'models', 'pk_attr': 'id', 'table_description': 'Events stored but not yet folded into the cube (written with them, same statement).'},
            bases=['Model'],
        ),
        # Existing events are folded into the cube by compaction (gql_usage.cube.compact),
        # which the server runs in the background from its first start.
        ops.RunSQL(
            'INSERT INTO usage_pending (account_id, api_key_id, endpoint_id, source_id, '
            'user_id, credits, occurred_at_us) SELECT account_id, api_key_id, endpoint_id, '
            'source_id, user_id, credits, occurred_at_us FROM usage_event ORDER BY id'
        ),
        ops.DeleteModel(name='UsageRollup'),
    ]
