from tortoise import migrations
from tortoise.migrations import operations as ops
from gql_usage.storage.models import Plan, Role
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name='Account',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('external_id', fields.CharField(unique=True, max_length=128)),
                ('name', fields.CharField(max_length=255)),
                ('plan', fields.CharEnumField(description='FREE: FREE\nPRO: PRO\nPREMIUM: PREMIUM\nSCALE: SCALE', enum_type=Plan, max_length=16)),
                ('time_zone', fields.CharField(default='UTC', max_length=64)),
                ('credits_granted', fields.BigIntField(default=0)),
                ('period_start', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('period_end', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'account', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='AccountEndpoint',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('account_id', fields.IntField()),
                ('endpoint_id', fields.IntField()),
            ],
            options={'table': 'account_endpoint', 'app': 'models', 'unique_together': (('account_id', 'endpoint_id'),), 'pk_attr': 'id', 'table_description': 'Endpoints an account has used (maintained by ingestion).'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='AccountSource',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('account_id', fields.IntField()),
                ('source_id', fields.IntField()),
            ],
            options={'table': 'account_source', 'app': 'models', 'unique_together': (('account_id', 'source_id'),), 'pk_attr': 'id', 'table_description': 'Sources an account has used (maintained by ingestion).'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Endpoint',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('path', fields.CharField(unique=True, max_length=512)),
                ('listed', fields.BooleanField(default=False, description="Listed endpoints are the vendor's published catalogue, shown to every account.")),
            ],
            options={'table': 'endpoint', 'app': 'models', 'pk_attr': 'id', 'table_description': 'The catalogue of billable endpoints, shared by all accounts.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Source',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('key', fields.CharField(unique=True, max_length=128)),
                ('name', fields.CharField(max_length=255)),
                ('listed', fields.BooleanField(default=False)),
            ],
            options={'table': 'source', 'app': 'models', 'pk_attr': 'id', 'table_description': 'Where a call came from (``api``, ``chrome_extension``, ...): an open set.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='UsageEvent',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('account_id', fields.IntField()),
                ('event_id', fields.CharField(max_length=128)),
                ('api_key_id', fields.IntField()),
                ('endpoint_id', fields.IntField()),
                ('source_id', fields.IntField()),
                ('user_id', fields.IntField()),
                ('credits', fields.BigIntField()),
                ('occurred_at_us', fields.BigIntField()),
                ('received_at_us', fields.BigIntField()),
            ],
            options={'table': 'usage_event', 'app': 'models', 'unique_together': (('account_id', 'event_id'),), 'indexes': [Index(fields=['account_id', 'occurred_at_us'], name='usage_event_acc_time')], 'pk_attr': 'id', 'table_description': 'One billable call, as the producer reported it. Never updated.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='UsageRollup',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('account_id', fields.IntField()),
                ('slot', fields.BigIntField()),
                ('api_key_id', fields.IntField()),
                ('endpoint_id', fields.IntField()),
                ('source_id', fields.IntField()),
                ('user_id', fields.IntField()),
                ('calls', fields.BigIntField()),
                ('credits', fields.BigIntField()),
            ],
            options={'table': 'usage_rollup', 'app': 'models', 'unique_together': (('account_id', 'slot', 'api_key_id', 'endpoint_id', 'source_id', 'user_id'),), 'pk_attr': 'id', 'table_description': 'Calls and credits per account, 15-minute UTC slot, key, endpoint, source and user.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='User',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('account', fields.ForeignKeyField('models.Account', source_field='account_id', db_constraint=True, to_field='id', related_name='users', on_delete=OnDelete.CASCADE)),
                ('external_id', fields.CharField(max_length=128)),
                ('name', fields.CharField(max_length=255)),
                ('email', fields.CharField(max_length=320)),
                ('role', fields.CharEnumField(description='ADMIN: ADMIN\nMEMBER: MEMBER', enum_type=Role, max_length=16)),
            ],
            options={'table': 'app_user', 'app': 'models', 'unique_together': (('account', 'external_id'),), 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='ApiKey',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('account', fields.ForeignKeyField('models.Account', source_field='account_id', db_constraint=True, to_field='id', related_name='api_keys', on_delete=OnDelete.CASCADE)),
                ('external_id', fields.CharField(max_length=128)),
                ('name', fields.CharField(max_length=255)),
                ('prefix', fields.CharField(max_length=64)),
                ('created_by', fields.ForeignKeyField('models.User', source_field='created_by_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.SET_NULL)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('revoked_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'api_key', 'app': 'models', 'unique_together': (('account', 'external_id'),), 'pk_attr': 'id'},
            bases=['Model'],
        ),
    ]
