"""Tortoise models: reference data synced from the vendor, raw usage events and the cube.

Tenant tables carry ``account_id`` and lead their indexes with it (a Citus distribution
key). Time on the hot tables is an integer (microseconds in ``usage_event``, a unit's Unix
second in ``usage_cube``), so bucketing is the same arithmetic on SQLite and PostgreSQL.
See README, 'Architecture' (Exactness), and ``gql_usage.analytics.reads``.
"""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.indexes import Index
from tortoise.models import Model

from gql_usage.calendar import DAY_S, HOUR_S, WEEK_S
from gql_usage.storage import thresholds

#: The finest cube grain: a 15-minute UTC slot (seconds).
SLOT_S = 15 * 60
#: User id of a call made without a user in ``usage_cube`` and ``usage_pending`` (and in
#: analytics results); ``usage_event`` stores NULL.
NO_USER = 0
#: Bit of each dimension column in ``usage_cube.dims`` (a row's grouping set); a dimension
#: outside the set is stored as 0. ``usage_cube`` and ``usage_pending`` are plain SQL
#: tables, not models (migration 0002 says why).
DIM_BITS = {"api_key_id": 1, "endpoint_id": 2, "source_id": 4, "user_id": 8}
_SINGLE_SETS = (0, 1, 2, 4, 8)
_ALL_SETS = (*_SINGLE_SETS, 1 | 2, 1 | 4, 1 | 8)
#: Grouping sets kept per grain, coarsest grain first: totals and each single dimension
#: per 7-day unit (epoch-aligned: Thursday to Thursday, UTC), so that a long range's
#: totals and breakdowns read a row per week, not per day, in its middle (a 365-day
#: breakdown by key: 52 units instead of 365); all keys or one key, by any single
#: dimension, per UTC day; totals and each single dimension per UTC hour (the edges of a
#: range); totals and per-key totals per 15-minute slot (series in half- and
#: quarter-hour zones). Each set is a row per event in sparse data, so fine grains keep
#: few sets; a one-key breakdown reads its partial-day edges from the raw events.
#: Migration 0008 built the week rows of cubes that existed before they did.
CUBE_SETS: dict[int, tuple[int, ...]] = {
    WEEK_S: _SINGLE_SETS,
    DAY_S: _ALL_SETS,
    HOUR_S: _SINGLE_SETS,
    SLOT_S: (0, 1),
}

class Plan(StrEnum):
    FREE = "FREE"
    PRO = "PRO"
    PREMIUM = "PREMIUM"
    SCALE = "SCALE"


class Role(StrEnum):
    ADMIN = "ADMIN"
    MEMBER = "MEMBER"


class Account(Model):
    id = fields.IntField(primary_key=True)
    external_id = fields.CharField(max_length=128, unique=True)
    name = fields.CharField(max_length=255)
    plan = fields.CharEnumField(Plan, max_length=16)
    time_zone = fields.CharField(max_length=64, default="UTC")
    credits_granted = fields.BigIntField(default=0)
    period_start = fields.DatetimeField()
    period_end = fields.DatetimeField()
    updated_at = fields.DatetimeField(auto_now=True)
    #: Percents of the pool (and of each key's budget) that raise an alert: sorted JSON
    #: text (migration 0004); read ``alert_threshold_percents``.
    alert_thresholds = fields.TextField(default=thresholds.DEFAULT_TEXT,
                                        db_default=thresholds.DEFAULT_TEXT)

    class Meta:
        table = "account"

    @property
    def alert_threshold_percents(self) -> tuple[int, ...]:
        """The account's alert thresholds (percents), sorted."""
        return thresholds.parse(self.alert_thresholds)


class User(Model):
    id = fields.IntField(primary_key=True)
    account: fields.ForeignKeyRelation[Account] = fields.ForeignKeyField(
        "models.Account", related_name="users", db_index=False
    )
    account_id: int
    external_id = fields.CharField(max_length=128)
    name = fields.CharField(max_length=255)
    email = fields.CharField(max_length=320)
    role = fields.CharEnumField(Role, max_length=16)

    class Meta:
        table = "app_user"
        unique_together = (("account", "external_id"),)


class ApiKey(Model):
    id = fields.IntField(primary_key=True)
    account: fields.ForeignKeyRelation[Account] = fields.ForeignKeyField(
        "models.Account", related_name="api_keys", db_index=False
    )
    account_id: int
    external_id = fields.CharField(max_length=128)
    name = fields.CharField(max_length=255)
    prefix = fields.CharField(max_length=64)
    created_by: fields.ForeignKeyNullableRelation[User] = fields.ForeignKeyField(
        "models.User", related_name=False, null=True, on_delete=fields.SET_NULL, db_index=False
    )
    created_by_id: int | None
    created_at = fields.DatetimeField()
    revoked_at = fields.DatetimeField(null=True)
    #: ``occurred_at_us`` of the key's newest stored event, kept by ingestion (migration
    #: 0004): ``ApiKey.lastUsedAt`` without reading the events. NULL: no event yet.
    last_used_at_us = fields.BigIntField(null=True)
    #: Credits the key may use per billing period (``ApiKey.budget``); NULL: no budget.
    credit_budget = fields.BigIntField(null=True)

    class Meta:
        table = "api_key"
        unique_together = (("account", "external_id"),)


class Endpoint(Model):
    """The catalogue of billable endpoints, shared by all accounts."""

    id = fields.IntField(primary_key=True)
    path = fields.CharField(max_length=512, unique=True)
    #: Listed endpoints are the vendor's published catalogue, shown to every account.
    #: Paths first seen in an account's events are unlisted: only accounts that used
    #: them see them (``AccountEndpoint``), so one tenant's typo never shows to another.
    listed = fields.BooleanField(default=False)

    class Meta:
        table = "endpoint"


class Source(Model):
    """Where a call came from (``api``, ``chrome_extension``, ...): an open set."""

    id = fields.IntField(primary_key=True)
    key = fields.CharField(max_length=128, unique=True)
    name = fields.CharField(max_length=255)
    listed = fields.BooleanField(default=False)

    class Meta:
        table = "source"


class AccountEndpoint(Model):
    """Endpoints an account has used (maintained by ingestion)."""

    id = fields.IntField(primary_key=True)
    account_id = fields.IntField()
    endpoint_id = fields.IntField()

    class Meta:
        table = "account_endpoint"
        unique_together = (("account_id", "endpoint_id"),)


class AccountSource(Model):
    """Sources an account has used (maintained by ingestion)."""

    id = fields.IntField(primary_key=True)
    account_id = fields.IntField()
    source_id = fields.IntField()

    class Meta:
        table = "account_source"
        unique_together = (("account_id", "source_id"),)


class UsageEvent(Model):
    """One billable call, as the producer reported it. Never updated."""

    id = fields.BigIntField(primary_key=True)
    account_id = fields.IntField()
    event_id = fields.CharField(max_length=128)
    api_key_id = fields.IntField()
    endpoint_id = fields.IntField()
    source_id = fields.IntField()
    #: NULL: a call made without a user (the cube and ``usage_pending`` store it as 0).
    user_id = fields.IntField(null=True)
    credits = fields.BigIntField()
    occurred_at_us = fields.BigIntField()
    received_at_us = fields.BigIntField()

    class Meta:
        table = "usage_event"
        #: Index ``usage_event_event_account`` (migration 0003): event id first, which
        #: the duplicate lookup of ``gql_usage.ingest`` relies on.
        unique_together = (("event_id", "account_id"),)
        indexes = (Index(fields=("account_id", "occurred_at_us"), name="usage_event_acc_time"),)


class AccessToken(Model):
    """A partner's read-only access token (SPEC 6.4): the hash of its secret, never the
    secret. The table is plain SQL (migration 0006: its keys include ``account_id``);
    ``gql_usage.storage.access_tokens`` reads and writes it. Times are microseconds since
    the epoch; ``revoked_at_us`` NULL while the token is valid, ``expires_at_us`` NULL
    when it never expires."""

    id = fields.BigIntField(primary_key=True)
    account_id = fields.IntField()
    external_id = fields.CharField(max_length=36)
    name = fields.CharField(max_length=255)
    prefix = fields.CharField(max_length=16)
    secret_hash = fields.CharField(max_length=64)
    #: The admin who created it (``app_user.id``); the token reads as this user.
    created_by_id = fields.IntField(null=True)
    created_at_us = fields.BigIntField()
    expires_at_us = fields.BigIntField(null=True)
    #: Written at most once a minute (``gql_usage.access_tokens.LAST_USED_EVERY_S``).
    last_used_at_us = fields.BigIntField(null=True)
    revoked_at_us = fields.BigIntField(null=True)

    class Meta:
        table = "access_token"
        unique_together = (("account_id", "external_id"), ("secret_hash", "account_id"))
