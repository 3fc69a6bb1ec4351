from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

BACKFILL = (
    'INSERT INTO usage_cube (account_id, grain, dims, t, api_key_id, endpoint_id, source_id, us'
    'er_id, calls, credits) SELECT e.account_id, g.grain, g.dims, (e.occurred_at_us / 1000000 /'
    ' g.grain) * g.grain AS t, CASE WHEN g.dims & 1 = 0 THEN 0 ELSE e.api_key_id END AS api_key'
    '_id, CASE WHEN g.dims & 2 = 0 THEN 0 ELSE e.endpoint_id END AS endpoint_id, CASE WHEN g.di'
    'ms & 4 = 0 THEN 0 ELSE e.source_id END AS source_id, CASE WHEN g.dims & 8 = 0 THEN 0 ELSE '
    'e.user_id END AS user_id, COUNT(*) AS calls, SUM(e.credits) AS credits FROM usage_event e '
    'CROSS JOIN (SELECT 900 AS grain, 0 AS dims UNION ALL SELECT 900 AS grain, 1 AS dims UNION '
    'ALL SELECT 900 AS grain, 2 AS dims UNION ALL SELECT 900 AS grain, 4 AS dims UNION ALL SELE'
    'CT 900 AS grain, 8 AS dims UNION ALL SELECT 900 AS grain, 3 AS dims UNION ALL SELECT 900 A'
    'S grain, 5 AS dims UNION ALL SELECT 900 AS grain, 9 AS dims UNION ALL SELECT 86400 AS grai'
    'n, 0 AS dims UNION ALL SELECT 86400 AS grain, 1 AS dims UNION ALL SELECT 86400 AS grain, 2'
    ' AS dims UNION ALL SELECT 86400 AS grain, 4 AS dims UNION ALL SELECT 86400 AS grain, 8 AS '
    'dims UNION ALL SELECT 86400 AS grain, 3 AS dims UNION ALL SELECT 86400 AS grain, 5 AS dims'
    ' UNION ALL SELECT 86400 AS grain, 9 AS dims) g WHERE true GROUP BY 1, 2, 3, 4, 5, 6, 7, 8 '
    'ORDER BY 1, 2, 3, 5, 6, 7, 8, 4 ON CONFLICT (account_id, grain, dims, api_key_id, endpoint'
    '_id, source_id, user_id, t) DO UPDATE SET calls = usage_cube.calls + excluded.calls, credi'
    'ts = usage_cube.credits + excluded.credits'
)


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
        # Backfill from the raw events: the SQL of gql_usage.cube.cells_sql as of this
        # migration (frozen here, like the rest of a migration).
        ops.RunSQL(BACKFILL),
        ops.DeleteModel(name='UsageRollup'),
    ]
