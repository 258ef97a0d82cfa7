"""Progress lines for long stages: what is done, how long it took, and when the rest should be.

    p = Progress("rollups ds=2026-10-30", total=7, log=log)
    p.done("user_day", rows=123_456)
    # rollups ds=2026-10-30: 1/7 user_day done in 12.3 s (rows=123,456); 12.3 s elapsed, ETA 1 min 14 s

The ETA assumes the remaining steps cost what the finished ones did on average: a rough guide for whoever watches a
task log ("is it stuck?"), not a promise.
"""
from __future__ import annotations

import logging
import time
from typing import Callable


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(int(round(seconds)), 60)
    return f"{minutes} min {s} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


class Progress:
    def __init__(self, what: str, total: int, log: logging.Logger, clock: Callable[[], float] = time.monotonic):
        self.what, self.total, self.log, self.clock = what, total, log, clock
        self.start = self.last = clock()
        self.count = 0

    def done(self, label: str, **extra) -> str:
        """One step finished: logs and returns the line."""
        now = self.clock()
        self.count += 1
        step, elapsed = now - self.last, now - self.start
        self.last = now
        left = self.total - self.count
        facts = ", ".join(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}" for k, v in extra.items())
        eta = f", ETA {_duration(elapsed / self.count * left)}" if left > 0 else ", all done"
        line = (f"{self.what}: {self.count}/{self.total} {label} done in {_duration(step)}"
                f"{f' ({facts})' if facts else ''}; {_duration(elapsed)} elapsed{eta}")
        self.log.info(line)
        return line
