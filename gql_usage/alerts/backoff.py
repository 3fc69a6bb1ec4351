"""When a failed webhook delivery is tried again: exponential backoff, capped, with jitter.

After the n-th failed attempt the next one waits ``d = min(cap, base * 2**(n-1))`` seconds
scaled by a random factor in [0.5, 1] ("equal jitter"), so that receivers coming back
from an outage are not hit by every sender at the same instant, and no wait exceeds
``cap``. With the defaults (base 10 s, cap 1 h): 5-10 s, 10-20 s, 20-40 s, ... and from
the 10th failure on, 30-60 minutes.
"""

from __future__ import annotations

import random


def retry_delay(failures: int, base_s: float, cap_s: float,
                rng: random.Random | None = None) -> float:
    """Seconds to wait after ``failures`` (>= 1) failed attempts."""
    if failures < 1:
        raise ValueError("failures must be 1 or more")
    exponent = min(failures - 1, 64)  # 2**64 * base is past any cap; no float overflow
    ceiling = min(cap_s, base_s * 2.0 ** exponent)
    return ceiling * (0.5 + 0.5 * (rng or random).random())
