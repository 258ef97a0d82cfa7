"""A token bucket for asyncio senders: at most `burst` at once, `rate` per second sustained.

Over any window of t seconds at most burst + rate * t requests pass — the property the delivery tests
check against the gateway's own request log.
"""
from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """`jitter_s` of rate is kept out of the burst: requests taken at exactly the allowed pace can still reach
    the receiver a few milliseconds closer together than they left, and the limit must hold on its side."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic, jitter_s: float = 0.02):
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, got rate={rate} burst={burst}")
        self.rate, self.clock = float(rate), clock
        self.burst = max(1, int(burst - rate * jitter_s))
        self.tokens = float(self.burst)
        self.at = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now

    async def take(self) -> None:
        async with self._lock:          # one waiter at a time: FIFO, and no two spend the same token
            self._refill()
            if self.tokens < 1:
                await asyncio.sleep((1 - self.tokens) / self.rate)
                self._refill()
            self.tokens -= 1


class Unlimited:
    async def take(self) -> None:
        return None
