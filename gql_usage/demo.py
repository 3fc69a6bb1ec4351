"""A realistic demo organisation for ``gql-usage serve --demo``.

``seed_demo`` fills an empty database with the ``acme`` and ``freebird`` accounts. Events go
through the real ingestion path (``Ingestor.ingest``), so the cube is maintained as in
production; everything derives from ``random.Random(seed)`` and ``now``, so the same
arguments give the same data. See README, 'gql_usage' (the demo data).
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate
from zoneinfo import ZoneInfo

from gql_usage.auth import issue_token
from gql_usage.calendar import DAY_S, HOUR_S, US, from_us, to_us
from gql_usage.ingest.ingestor import Ingestor
from gql_usage.storage.cube import compact_all
from gql_usage.storage.models import Account, ApiKey, Endpoint, Plan, Role, Source, User

ACME = "acme"
FREEBIRD = "freebird"
BATCH_SIZE = 2_000
FREEBIRD_EVENTS = 200
#: Share of the acme events that make up the enrichment spike.
SPIKE_SHARE = 0.03

#: Billable endpoints, most popular first (Zipf rank), with their cost per call.
ENDPOINTS: tuple[tuple[str, int], ...] = (
    ("/v2/person", 1),
    ("/v2/company", 1),
    ("prospecting/contact/enrich", 5),
    ("prospecting/contact/search", 0),
    ("/v2/autocomplete", 0),
    ("/v2/company/search", 1),
    ("/v2/person/bulk", 10),
)
ENDPOINT_COST = dict(ENDPOINTS)

SOURCES: tuple[tuple[str, str], ...] = (
    ("api", "API"),
    ("chrome_extension", "Chrome extension"),
    ("salesforce", "Salesforce"),
    ("hubspot", "HubSpot"),
)

#: (external id, name, email local part, role)
ACME_USERS: tuple[tuple[str, str, str, Role], ...] = (
    ("u_alice", "Alice Wagner", "alice.wagner", Role.ADMIN),
    ("u_ben", "Ben Okafor", "ben.okafor", Role.ADMIN),
    ("u_chloe", "Chloé Martin", "chloe.martin", Role.ADMIN),
    ("u_dave", "David Kim", "david.kim", Role.MEMBER),
    ("u_emma", "Emma Fischer", "emma.fischer", Role.MEMBER),
    ("u_farid", "Farid Haddad", "farid.haddad", Role.MEMBER),
    ("u_greta", "Greta Lindqvist", "greta.lindqvist", Role.MEMBER),
    ("u_hiro", "Hiro Tanaka", "hiro.tanaka", Role.MEMBER),
)


@dataclass(frozen=True)
class _KeySpec:
    external_id: str
    name: str
    prefix: str
    created_by: str
    created_days_ago: float
    revoked_days_ago: float | None
    source: str
    #: Relative weight of each user of this key.
    users: dict[str, float]
    #: Multipliers on the global endpoint popularity (missing: 1, 0: never called).
    endpoint_affinity: dict[str, float]


#: API keys, most used first (Zipf rank).
ACME_KEYS: tuple[_KeySpec, ...] = (
    _KeySpec("key_prod", "Production backend", "pk_live_3f9a", "u_alice", 425.3, None, "api",
             {"u_alice": 0.6, "u_ben": 0.4}, {}),
    _KeySpec("key_salesforce", "Salesforce integration", "pk_live_a7d0", "u_chloe", 379.6,
             None, "salesforce",
             {"u_dave": 5, "u_emma": 4, "u_farid": 3, "u_greta": 2, "u_hiro": 1},
             {"prospecting/contact/enrich": 3, "/v2/company": 1.5, "/v2/autocomplete": 0,
              "/v2/person/bulk": 0.5}),
    _KeySpec("key_chrome", "Chrome extension (sales team)", "pk_live_5be4", "u_chloe", 331.4,
             None, "chrome_extension",
             {"u_farid": 6, "u_dave": 5, "u_greta": 4, "u_hiro": 3, "u_emma": 2, "u_chloe": 1},
             {"/v2/person": 1.5, "prospecting/contact/enrich": 2, "/v2/autocomplete": 3,
              "/v2/company/search": 0.3, "/v2/person/bulk": 0}),
    _KeySpec("key_growth", "Growth team enrichment", "pk_live_c19e", "u_ben", 268.8, None, "api",
             {"u_emma": 0.7, "u_chloe": 0.3},
             {"prospecting/contact/enrich": 4, "prospecting/contact/search": 3,
              "/v2/person/bulk": 2}),
    _KeySpec("key_legacy_etl", "Legacy batch importer", "pk_live_9e27", "u_ben", 409.2, 61.4,
             "api", {"u_ben": 1},
             {"/v2/person/bulk": 6, "prospecting/contact/search": 0.5, "/v2/autocomplete": 0}),
    _KeySpec("key_hubspot", "HubSpot sync", "pk_live_0d6b", "u_alice", 151.7, None, "hubspot",
             {"u_greta": 1, "u_hiro": 1},
             {"/v2/company": 2, "prospecting/contact/enrich": 2, "/v2/autocomplete": 0}),
    _KeySpec("key_staging", "Staging", "pk_test_81c2", "u_ben", 420.9, None, "api",
             {"u_ben": 5, "u_alice": 3, "u_chloe": 2}, {}),
)
SPIKE_KEY = "key_growth"
SPIKE_ENDPOINT = "prospecting/contact/enrich"

#: Relative call volume by local hour on a working day (Europe/Berlin).
_WORKDAY_HOURS = (0.04, 0.03, 0.03, 0.03, 0.04, 0.06, 0.12, 0.3, 0.7, 1.0, 1.1, 1.1,
                  0.8, 0.9, 1.1, 1.1, 1.0, 0.8, 0.5, 0.3, 0.2, 0.15, 0.1, 0.06)
#: Scheduled jobs run around the clock, whatever the day.
_BACKGROUND = 0.04
_WEEKDAY_FACTOR = (1.0, 1.05, 1.05, 1.0, 0.85, 0.12, 0.08)  # Monday .. Sunday
_WINDOW = timedelta(days=396)  # about 13 months
_SPIKE_DAYS_AGO = 42


@dataclass
class DemoInfo:
    """Who to log in as: (user external id, account external id) pairs."""

    paid_admin: tuple[str, str] = ("u_alice", ACME)
    member: tuple[str, str] = ("u_dave", ACME)
    free_admin: tuple[str, str] = ("u_fran", FREEBIRD)
    #: True when this call filled the database, False when the demo was already there.
    seeded: bool = False

    def tokens(self, secret: str, ttl: int = 30 * DAY_S) -> dict[str, str]:
        """Signed JWTs, by label: ``paid_admin``, ``member``, ``free_admin``."""
        return {label: issue_token(secret, user, account, ttl)
                for label, (user, account) in self.logins().items()}

    def logins(self) -> dict[str, tuple[str, str]]:
        return {"paid_admin": self.paid_admin, "member": self.member,
                "free_admin": self.free_admin}

    def descriptions(self) -> dict[str, str]:
        """What each token is, for a person reading the console."""
        return {
            "paid_admin": f"admin of a paid (PREMIUM) account: {self.paid_admin[0]} @ "
                          f"{self.paid_admin[1]}",
            "member": f"member (not admin) of the same account: {self.member[0]} @ "
                      f"{self.member[1]}",
            "free_admin": f"admin of a FREE-plan account: {self.free_admin[0]} @ "
                          f"{self.free_admin[1]}",
        }


async def seed_demo(*, events: int = 120_000, seed: int = 7,
                    now: datetime | None = None) -> DemoInfo:
    """Fill an empty database with the demo organisations (Tortoise must be initialised).

    Does nothing when the ``acme`` account already exists, so it is safe on every start.
    """
    if await Account.filter(external_id=ACME).exists():
        return DemoInfo()
    if now is None:
        now = datetime.now(UTC) - timedelta(minutes=1)
    elif now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    now = now.astimezone(UTC)
    rng = random.Random(seed)
    # A ``now`` ahead of the clock would otherwise have its last events refused as future.
    ahead = math.ceil((now - datetime.now(UTC)).total_seconds())
    ingestor = Ingestor(max_future_seconds=max(300, ahead + 300))

    await _seed_catalogue()
    await _seed_acme_reference(now)
    await _ingest(ingestor, _acme_events(events, rng, now))
    if not await Account.filter(external_id=FREEBIRD).exists():
        await _seed_freebird_reference(now)
        await _ingest(ingestor, _freebird_events(FREEBIRD_EVENTS, rng, now))
    await compact_all()
    return DemoInfo(seeded=True)


# --- reference data -----------------------------------------------------------------


def _current_month(now: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    local = now.astimezone(zone)
    start = datetime(local.year, local.month, 1, tzinfo=zone)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return start, datetime(year, month, 1, tzinfo=zone)


async def _seed_catalogue() -> None:
    for path, _cost in ENDPOINTS:
        await Endpoint.update_or_create(path=path, defaults={"listed": True})
    for key, name in SOURCES:
        await Source.update_or_create(key=key, defaults={"name": name, "listed": True})


async def _seed_acme_reference(now: datetime) -> None:
    zone = ZoneInfo("Europe/Berlin")
    period_start, period_end = _current_month(now, zone)
    account, _ = await Account.update_or_create(external_id=ACME, defaults={
        "name": "Acme Data Corp", "plan": Plan.PREMIUM, "time_zone": zone.key,
        "credits_granted": 50_000, "period_start": period_start, "period_end": period_end})
    users: dict[str, User] = {}
    for external_id, name, local_part, role in ACME_USERS:
        users[external_id], _ = await User.update_or_create(
            account=account, external_id=external_id,
            defaults={"name": name, "email": f"{local_part}@acme.example", "role": role})
    for spec in ACME_KEYS:
        await ApiKey.update_or_create(account=account, external_id=spec.external_id, defaults={
            "name": spec.name, "prefix": spec.prefix, "created_by": users[spec.created_by],
            "created_at": _whole_seconds(now - timedelta(days=spec.created_days_ago)),
            "revoked_at": None if spec.revoked_days_ago is None else _whole_seconds(
                now - timedelta(days=spec.revoked_days_ago))})


async def _seed_freebird_reference(now: datetime) -> None:
    zone = ZoneInfo("America/New_York")
    period_start, period_end = _current_month(now, zone)
    account, _ = await Account.update_or_create(external_id=FREEBIRD, defaults={
        "name": "Freebird Labs", "plan": Plan.FREE, "time_zone": zone.key,
        "credits_granted": 1_000, "period_start": period_start, "period_end": period_end})
    fran, _ = await User.update_or_create(account=account, external_id="u_fran", defaults={
        "name": "Fran Delgado", "email": "fran@freebird.example", "role": Role.ADMIN})
    await ApiKey.update_or_create(account=account, external_id="key_default", defaults={
        "name": "Default key", "prefix": "pk_live_7a1c", "created_by": fran,
        "created_at": _whole_seconds(now - timedelta(days=87.3)), "revoked_at": None})


def _whole_seconds(value: datetime) -> datetime:
    return value.replace(microsecond=0)


# --- events --------------------------------------------------------------------------

_HOUR_US = HOUR_S * US


def _cumulative(weights: list[float]) -> list[float]:
    return list(accumulate(weights))


def _pick(rng: random.Random, cum: list[float]) -> int:
    return bisect.bisect_right(cum, rng.random() * cum[-1])


def _holiday_factor(day: date) -> float:
    if (day.month, day.day) in ((12, 24), (12, 25), (12, 26), (12, 31), (1, 1)):
        return 0.15
    if (day.month == 12 and day.day >= 22) or (day.month == 1 and day.day <= 3):
        return 0.45
    return 1.0


def _acme_events(count: int, rng: random.Random, now: datetime) -> list[dict[str, object]]:
    """``count`` events (sorted by time, ids ``demo-0`` ..) over the 13 months before now."""
    zone = ZoneInfo("Europe/Berlin")
    now_us = to_us(now)
    first_hour_us = (to_us(now - _WINDOW) // _HOUR_US) * _HOUR_US
    hours = (now_us - first_hour_us + _HOUR_US - 1) // _HOUR_US
    span = now_us - first_hour_us

    # One weight per UTC hour: local working rhythm x growth x daily noise. Zone look-ups
    # happen once per hour of the window (~9,500), never per event.
    day_noise: dict[date, float] = {}
    weights: list[float] = []
    lengths: list[int] = []
    for h in range(hours):
        start_us = first_hour_us + h * _HOUR_US
        length = min(_HOUR_US, now_us - start_us)
        local = from_us(start_us, zone)
        day = local.date()
        if day not in day_noise:
            day_noise[day] = rng.lognormvariate(0.0, 0.12) * _holiday_factor(day)
        rhythm = _WORKDAY_HOURS[local.hour] * _WEEKDAY_FACTOR[local.weekday()] + _BACKGROUND
        growth = 2.0 ** (1.1 * (start_us - first_hour_us) / span)
        weights.append(rhythm * growth * day_noise[day] * length / _HOUR_US)
        lengths.append(length)
    hour_cum = _cumulative(weights)

    # Keys: Zipf popularity among the keys live for the whole hour.
    key_index = {spec.external_id: i for i, spec in enumerate(ACME_KEYS)}
    key_weight = [1.0 / (rank + 1) ** 1.1 for rank in range(len(ACME_KEYS))]
    lives = [(to_us(now - timedelta(days=s.created_days_ago)),
              None if s.revoked_days_ago is None
              else to_us(now - timedelta(days=s.revoked_days_ago)))
             for s in ACME_KEYS]
    key_cums: dict[tuple[int, ...], tuple[tuple[int, ...], list[float]]] = {}
    hour_keys: list[tuple[tuple[int, ...], list[float]]] = []
    for h in range(hours):
        start_us = first_hour_us + h * _HOUR_US
        live = tuple(i for i, (created, revoked) in enumerate(lives)
                     if created <= start_us and (revoked is None or start_us + _HOUR_US <= revoked))
        if live not in key_cums:
            key_cums[live] = (live, _cumulative([key_weight[i] for i in live]))
        hour_keys.append(key_cums[live])

    # Per key: endpoint mix (global Zipf x the key's affinity) and who uses it.
    paths = [path for path, _ in ENDPOINTS]
    endpoint_base = [1.0 / (rank + 1) for rank in range(len(paths))]
    endpoint_cums = [
        _cumulative([w * spec.endpoint_affinity.get(p, 1.0) for p, w in zip(
            paths, endpoint_base, strict=True)])
        for spec in ACME_KEYS]
    user_lists = [list(spec.users) for spec in ACME_KEYS]
    user_cums = [_cumulative(list(spec.users.values())) for spec in ACME_KEYS]

    # (occurred_at_us, key index, endpoint index, user external id)
    drawn: list[tuple[int, int, int, str]] = []
    spike = round(count * SPIKE_SHARE) if count >= 1_000 else 0
    while len(drawn) < count - spike:
        h = _pick(rng, hour_cum)
        live, cum = hour_keys[h]
        if not live:  # no key existed yet (not the case with the keys above)
            continue
        at = first_hour_us + h * _HOUR_US + int(rng.random() * lengths[h])
        k = live[_pick(rng, cum)]
        e = _pick(rng, endpoint_cums[k])
        drawn.append((at, k, e, user_lists[k][_pick(rng, user_cums[k])]))

    # The spike: a three-day enrichment job from one key, starting 07:00 Berlin time.
    spike_day = (now - timedelta(days=_SPIKE_DAYS_AGO)).astimezone(zone).date()
    spike_start = to_us(datetime(spike_day.year, spike_day.month, spike_day.day, 7, tzinfo=zone))
    k = key_index[SPIKE_KEY]
    e = paths.index(SPIKE_ENDPOINT)
    for _ in range(spike):
        at = spike_start + int(rng.random() * 3 * 24 * _HOUR_US)
        drawn.append((at, k, e, user_lists[k][_pick(rng, user_cums[k])]))

    drawn.sort()
    return [
        {"id": f"demo-{n}", "accountId": ACME, "apiKeyId": ACME_KEYS[k].external_id,
         "userId": user, "endpoint": paths[e], "source": ACME_KEYS[k].source,
         "credits": ENDPOINTS[e][1], "occurredAt": from_us(at).isoformat()}
        for n, (at, k, e, user) in enumerate(drawn)
    ]


def _freebird_events(count: int, rng: random.Random, now: datetime) -> list[dict[str, object]]:
    """A light user: working hours in New York over the last 60 days, the key's lifetime."""
    zone = ZoneInfo("America/New_York")
    today = now.astimezone(zone).date()
    choices = (("/v2/person", 6), ("/v2/company", 3), ("/v2/autocomplete", 2))
    cum = _cumulative([float(w) for _, w in choices])
    drawn: list[int] = []
    while len(drawn) < count:
        day = today - timedelta(days=rng.randrange(60))
        if day.weekday() >= 5 and rng.random() < 0.8:
            continue
        local = datetime(day.year, day.month, day.day, 9, tzinfo=zone) + timedelta(
            seconds=rng.random() * 9 * HOUR_S)
        at = to_us(local.astimezone(UTC))
        if at < to_us(now):
            drawn.append(at)
    drawn.sort()
    out: list[dict[str, object]] = []
    for n, at in enumerate(drawn):
        path = choices[_pick(rng, cum)][0]
        out.append({"id": f"demo-free-{n}", "accountId": FREEBIRD, "apiKeyId": "key_default",
                    "userId": "u_fran", "endpoint": path, "source": "api",
                    "credits": ENDPOINT_COST[path], "occurredAt": from_us(at).isoformat()})
    return out


async def _ingest(ingestor: Ingestor, items: list[dict[str, object]]) -> None:
    for start in range(0, len(items), BATCH_SIZE):
        result = await ingestor.ingest(items[start:start + BATCH_SIZE])
        if result.rejected:
            first = result.rejected[0]
            raise RuntimeError(
                f"demo event {start + first.index} was rejected: {first.reason} "
                f"({len(result.rejected)} rejected in this batch)")
