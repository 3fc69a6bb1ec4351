"""The garbage collector of a serving process, tuned once its start-up is done.

A request makes tens of thousands of short-lived objects (a batch of 1,000 events, a page
of 50 keys' usage), nearly all freed by reference counting. With Python's defaults the
collector still ran a young collection every 700 net allocations and, every hundredth of
those, a full one over every object of the process: the GraphQL schema, the ORM's
models, the pool, all made at start-up and alive until exit. Measured on one worker
(``gc.callbacks`` timing every collection): ingesting 630,000 dense events, 2.9 s of the
server's 26.6 s of CPU were collections, 1.6 s of it 24 full ones.

``tune_for_serving`` moves what start-up made out of the collector's sight
(``gc.freeze``: full collections no longer walk it) and collects the young generation
after ``YOUNG_THRESHOLD`` net allocations instead of 700. Dense ingestion on one worker
(630,000 events, 4 senders, two runs each) 29,500 -> 32,200 events/s; server CPU per
dashboard page against the commit before (``python -m bench.compare``, 300k events, 200
interleaved requests per server) 13.94 -> 12.35 ms for 30 days and 19.69 -> 15.96 ms for
365 days (docs/performance.md, round 5). The cost: cyclic garbage lives up to 10,000 allocations
longer, and an object start-up made that later becomes cyclic garbage (a pooled
connection replaced after a database restart, say) is never collected: a bounded loss,
as only what existed at the freeze can leak. Only ``gql-usage serve``'s processes are
tuned (``create_app(tune_gc=True)``), never a test process. The thresholds are those of
Python 3.11 to 3.13's generational collector (3.14's incremental one reads them
differently: measure again before raising ``requires-python``).
"""

from __future__ import annotations

import gc

#: Net allocations between two young collections (Python's default: 700).
YOUNG_THRESHOLD = 10_000


def tune_for_serving() -> None:
    """Collect once, freeze everything alive (start-up's objects), and collect the young
    generation every ``YOUNG_THRESHOLD`` net allocations; the older generations keep
    their thresholds."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
