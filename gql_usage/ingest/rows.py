"""A validated event resolved to internal ids."""

from __future__ import annotations

import time
from typing import NamedTuple


class _Row(NamedTuple):
    """A validated event resolved to internal ids, ready to store."""

    account_id: int
    event_id: str
    api_key_id: int
    endpoint_id: int
    source_id: int
    user_id: int | None  # None: a call made without a user
    credits: int
    occurred_at_us: int
    position: int  # in the batch

    def content(self) -> tuple[int | None, ...]:
        return (self.api_key_id, self.endpoint_id, self.source_id, self.user_id,
                self.credits, self.occurred_at_us)


_EVENT_COLUMNS = ("account_id", "event_id", "api_key_id", "endpoint_id", "source_id",
                  "user_id", "credits", "occurred_at_us", "received_at_us")


def _now_us() -> int:
    return int(time.time() * 1_000_000)


_CONTENT_COLUMNS = ("api_key_id", "endpoint_id", "source_id", "user_id", "credits",
                    "occurred_at_us")
