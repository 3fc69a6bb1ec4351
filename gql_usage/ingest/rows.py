"""A validated event resolved to internal ids: the row both dialects store."""

from __future__ import annotations

import time
from typing import NamedTuple

from gql_usage.calendar import US


class Row(NamedTuple):
    """A validated event resolved to internal ids, ready to store.

    Sorts by (account, event id) first: batches sorted so take row locks in one order.
    """

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
        """What a resent event must repeat to be a duplicate (``CONTENT_COLUMNS``)."""
        return (self.api_key_id, self.endpoint_id, self.source_id, self.user_id,
                self.credits, self.occurred_at_us)


#: ``usage_event`` columns an insert writes, in ``Row``'s field order (then the receive time).
EVENT_COLUMNS = ("account_id", "event_id", "api_key_id", "endpoint_id", "source_id",
                 "user_id", "credits", "occurred_at_us", "received_at_us")
#: ``usage_event`` columns of ``Row.content``, read back by the duplicate lookup.
CONTENT_COLUMNS = ("api_key_id", "endpoint_id", "source_id", "user_id", "credits",
                   "occurred_at_us")


def now_us() -> int:
    """The current time in microseconds since the epoch."""
    return int(time.time() * US)
