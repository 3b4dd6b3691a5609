"""Progress lines for long loops: one log line every PROGRESS_SECONDS, none for short runs."""
from __future__ import annotations

import logging
import time

LOG = logging.getLogger("progress")
PROGRESS_SECONDS = 10.0


class Progress:
    """`update(done)` after each chunk of work; logs "<what>: done/total <unit> (x%), Ns" when
    PROGRESS_SECONDS have passed since the start or the previous line."""

    def __init__(self, what: str, total: int, unit: str):
        self.what, self.total, self.unit = what, total, unit
        self.start = self.last = time.time()

    def update(self, done: int) -> None:
        now = time.time()
        if now - self.last >= PROGRESS_SECONDS and done < self.total:
            self.last = now
            LOG.info("%s: %d/%d %s (%.0f%%), %.0fs", self.what, done, self.total, self.unit,
                     100.0 * done / max(self.total, 1), now - self.start)
