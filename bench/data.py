"""Deterministic, realistic multi-tenant usage data for the benchmarks.

One large account (``bigco``, Europe/Berlin, 50 API keys, 200 users, Zipf-like endpoint
and key popularity, working-hours and weekday rhythm, a trend and a few spikes) with
``events`` events over ``days`` days ending at ``END``, plus ``small_accounts`` small
accounts sharing ``small_share`` as many events between them. Same seed, same data.

Events come out as ready-to-send JSON array bodies of ``batch_size`` events, roughly in
time order (as a live producer would send them), small accounts' batches interleaved.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

BERLIN = ZoneInfo("Europe/Berlin")
#: The data ends at local midnight in Berlin, so "the last N days" are whole local days.
END = datetime(2026, 11, 1, tzinfo=BERLIN).astimezone(UTC)
LARGE = "bigco"
SOURCES = ("api", "chrome_extension", "salesforce", "hubspot")
SOURCE_WEIGHTS = (0.72, 0.14, 0.1, 0.04)
ENDPOINTS = (
    "/v2/person", "/v2/company", "prospecting/contact/enrich", "/v2/person/search",
    "/v2/company/search", "/v2/email/verify", "/v2/phone/lookup", "/v2/person/bulk",
    "/v2/company/bulk", "/v2/technographics", "/v2/intent", "/v2/jobs", "/v2/news",
    "/v2/funding", "/v2/org-chart", "prospecting/list/build", "prospecting/sequence/push",
    "/v2/person/history", "/v2/company/similar", "/v2/domain/resolve", "/v2/ip/resolve",
    "/v2/social/lookup", "/v2/webhooks/test", "/v2/usage", "/v1/person", "/v1/company",
    "/v1/email/find", "/v1/search", "/v2/export", "/v2/audience",
)
#: Credits per call of each endpoint (a few are free).
COSTS = np.array([1, 1, 5, 2, 2, 1, 3, 10, 10, 4, 6, 2, 1, 3, 8, 5, 2, 2, 2, 0, 0, 1, 0, 0,
                  1, 1, 3, 2, 20, 15], dtype=np.int64)


@dataclass(frozen=True)
class AccountSpec:
    external_id: str
    time_zone: str
    plan: str
    keys: list[str]
    users: list[str]
    key_owner: dict[str, str] = field(default_factory=dict)


def _zipf_weights(n: int, s: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** s
    return w / w.sum()


@dataclass
class Dataset:
    events: int = 100_000
    days: int = 365
    seed: int = 7
    small_accounts: int = 1_000
    small_share: float = 0.05
    batch_size: int = 1_000
    #: Starts every event id: a second dataset with another prefix (and seed) holds new
    #: events for the same accounts (the benchmark's mixed run).
    id_prefix: str = ""

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        keys = [f"key-{i:02d}" for i in range(50)]
        users = [f"user-{i:03d}" for i in range(200)]
        owners = {k: users[int(rng.integers(0, 40))] for k in keys}
        self.large = AccountSpec(LARGE, "Europe/Berlin", "SCALE", keys, users, owners)
        n_small = self.small_accounts if self.events >= 10 * self.small_accounts else max(
            1, self.events // 1000)
        self.small = [AccountSpec(f"small-{i:04d}", ("UTC", "America/New_York",
                                                     "Asia/Kolkata")[i % 3],
                                  ("PRO", "PREMIUM", "FREE")[i % 3],
                                  ["key-a", "key-b"], ["user-a", "user-b"],
                                  {"key-a": "user-a", "key-b": "user-b"})
                      for i in range(n_small)]
        self.small_events = int(self.events * self.small_share) // max(1, n_small) * n_small

    @property
    def accounts(self) -> list[AccountSpec]:
        return [self.large, *self.small]

    @property
    def total_events(self) -> int:
        return self.events + self.small_events

    @property
    def start(self) -> datetime:
        return END - timedelta(days=self.days)

    def _day_counts(self, rng: np.random.Generator, total: int) -> np.ndarray:
        days = np.arange(self.days)
        start = self.start
        weekday = np.array([(start + timedelta(days=int(d))).weekday() for d in days])
        w = np.where(weekday < 5, 1.0, 0.22) * (0.6 + 0.8 * days / max(1, self.days - 1))
        spikes = rng.choice(self.days, size=min(5, self.days), replace=False)
        w[spikes] *= rng.uniform(3, 8, size=len(spikes))
        w *= rng.uniform(0.85, 1.15, size=self.days)
        counts = np.floor(w / w.sum() * total).astype(np.int64)
        counts[-1] += total - counts.sum()
        return counts

    def _times(self, rng: np.random.Generator, day: int, n: int) -> np.ndarray:
        """Microseconds since the epoch; Berlin working hours dominate."""
        hours = np.arange(24)
        local = (hours + 1) % 24  # UTC hour -> roughly Berlin local hour
        hw = np.where((local >= 8) & (local < 19), 1.0, 0.08)
        hw[(local >= 12) & (local < 13)] = 0.6
        hw /= hw.sum()
        day_start = int((self.start + timedelta(days=day)).timestamp()) * 1_000_000
        hour = rng.choice(24, size=n, p=hw)
        offs = hour * 3_600_000_000 + rng.integers(0, 3_600_000_000, size=n)
        return np.sort(day_start + offs)

    def batches(self) -> Iterator[bytes]:
        """Every event once, as JSON array bodies; large-account batches in time order."""
        rng = np.random.default_rng(self.seed + 1)
        acc = self.large
        key_p = _zipf_weights(len(acc.keys), 1.1)
        user_p = _zipf_weights(len(acc.users), 0.9)
        ep_p = _zipf_weights(len(ENDPOINTS), 1.2)
        owner_idx = np.array([acc.users.index(acc.key_owner[k]) for k in acc.keys])
        counts = self._day_counts(rng, self.events)
        small_iter = self._small_batches()
        pending: list[str] = []
        serial = 0
        for day in range(self.days):
            n = int(counts[day])
            if n == 0:
                continue
            t = self._times(rng, day, n)
            k = rng.choice(len(acc.keys), size=n, p=key_p)
            e = rng.choice(len(ENDPOINTS), size=n, p=ep_p)
            s = rng.choice(len(SOURCES), size=n, p=SOURCE_WEIGHTS)
            u = np.where(s == 0, owner_idx[k], rng.choice(len(acc.users), size=n, p=user_p))
            stamps = np.datetime_as_string(t.astype("datetime64[us]"), unit="us")
            credits = COSTS[e]
            for i in range(n):
                pending.append(
                    f'{{"id":"{self.id_prefix}e{serial + i}","accountId":"{LARGE}",'
                    f'"apiKeyId":"{acc.keys[k[i]]}",'
                    f'"userId":"{acc.users[u[i]]}","endpoint":"{ENDPOINTS[e[i]]}",'
                    f'"source":"{SOURCES[s[i]]}","credits":{credits[i]},'
                    f'"occurredAt":"{stamps[i]}Z"}}')
            serial += n
            while len(pending) >= self.batch_size:
                yield _body(pending[:self.batch_size])
                del pending[:self.batch_size]
                if serial % 20 == 0 or rng.random() < 0.05:
                    nxt = next(small_iter, None)
                    if nxt is not None:
                        yield nxt
        if pending:
            yield _body(pending)
        yield from small_iter

    def _small_batches(self) -> Iterator[bytes]:
        if not self.small_events:
            return
        rng = np.random.default_rng(self.seed + 2)
        per = self.small_events // len(self.small)
        span_us = self.days * 86_400 * 1_000_000
        start_us = int(self.start.timestamp()) * 1_000_000
        pending: list[str] = []
        for a in self.small:
            t = np.sort(start_us + rng.integers(0, span_us, size=per))
            stamps = np.datetime_as_string(t.astype("datetime64[us]"), unit="us")
            e = rng.integers(0, 6, size=per)
            for i in range(per):
                key = a.keys[i % 2]
                pending.append(
                    f'{{"id":"{self.id_prefix}s{i}","accountId":"{a.external_id}","apiKeyId":"{key}",'
                    f'"userId":"{a.key_owner[key]}","endpoint":"{ENDPOINTS[e[i]]}",'
                    f'"source":"api","credits":{COSTS[e[i]]},"occurredAt":"{stamps[i]}Z"}}')
                if len(pending) == self.batch_size:
                    yield _body(pending)
                    pending = []
        if pending:
            yield _body(pending)


def _body(events: list[str]) -> bytes:
    return ("[" + ",".join(events) + "]").encode()


@dataclass
class SparseMix:
    """Many small accounts (``accounts`` x ``per_account`` events over ``days`` days ending
    at ``END``), sent in time order across accounts, as live traffic from many tenants
    arrives: nearly every event is alone in its hour and 15-minute slot. Each account has
    one user and one key (``sparse-00000``, ``key-a``, ``user-a``); same seed, same data."""

    accounts: int = 10_000
    per_account: int = 100
    days: int = 365
    seed: int = 7
    batch_size: int = 1_000

    @property
    def specs(self) -> list[AccountSpec]:
        return [AccountSpec(f"sparse-{i:05d}", ("UTC", "America/New_York", "Asia/Kolkata")[i % 3],
                            "FREE", ["key-a"], ["user-a"], {"key-a": "user-a"})
                for i in range(self.accounts)]

    @property
    def total_events(self) -> int:
        return self.accounts * self.per_account

    def batches(self) -> Iterator[bytes]:
        """Every event once, as JSON array bodies, all accounts interleaved in time order."""
        if not self.total_events:
            return
        rng = np.random.default_rng(self.seed + 3)
        n = self.total_events
        span_us = self.days * 86_400 * 1_000_000
        start_us = int((END - timedelta(days=self.days)).timestamp()) * 1_000_000
        account = np.repeat(np.arange(self.accounts), self.per_account)
        t = start_us + rng.integers(0, span_us, size=n)
        order = np.argsort(t, kind="stable")
        account, t = account[order], t[order]
        stamps = np.datetime_as_string(t.astype("datetime64[us]"), unit="us")
        e = rng.integers(0, 6, size=n)
        pending: list[str] = []
        for i in range(n):
            pending.append(
                f'{{"id":"p{i}","accountId":"sparse-{account[i]:05d}","apiKeyId":"key-a",'
                f'"userId":"user-a","endpoint":"{ENDPOINTS[e[i]]}","source":"api",'
                f'"credits":{COSTS[e[i]]},"occurredAt":"{stamps[i]}Z"}}')
            if len(pending) == self.batch_size:
                yield _body(pending)
                pending = []
        if pending:
            yield _body(pending)
