"""When a model the worker loaded should unload: its keep-alive added to the time of its last
use. Parsing a request's keep-alive is `core.durations.parse_keep_alive` (one parser for
settings, doctor and requests), re-exported here with `FOREVER` for the worker's modules. Pure:
the caller supplies the clock.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from ragvisor.core.durations import FOREVER, parse_keep_alive

__all__ = ["FOREVER", "expiry", "parse_keep_alive"]

# Far enough for "forever" yet inside datetime's range once added to any realistic now.
_FOREVER_SPAN = timedelta(days=365 * 100)


def expiry(now: datetime, keep_alive_s: float) -> datetime:
    """When a model used at `now` should unload; a century ahead for `FOREVER`.

    `/api/ps` reports this as `expires_at`; Ollama shows a far-future date for pinned models too.
    """
    if math.isinf(keep_alive_s):
        return now + _FOREVER_SPAN
    return now + timedelta(seconds=keep_alive_s)
