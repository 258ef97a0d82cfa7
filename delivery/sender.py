"""Throttled, resumable sending: a dispatcher releases messages on a ramp through a token bucket to N
concurrent senders; answers are classified, retried with backoff, and written to the ledger in batches.

- Release: message i of n is not sent before start + i/n * ramp (an hour's batch is spread, not dumped).
- Rate: every request, retries included, takes a token from one bucket (rate/s, burst).
- Retries: 429/5xx/timeouts/connection errors, after max(Retry-After, full-jitter exponential backoff
  capped); a message is dead-lettered when its attempts are used up or its next try would fall after the
  deadline — with its last status as the reason. 404 UNREGISTERED: dead letter + the token is reported
  dead. 400: dead letter, not retried. 401/403: the whole run stops (every message would fail the same
  way) and the rest stays pending for a re-run once credentials are fixed.
- Send intent: with `claim`, a message is claimed in the ledger (committed) before its request goes out, and
  at most `max_in_doubt` messages are claimed and not yet recorded at any time (a flush is forced when the
  window is full). If the process dies, exactly those are in doubt: the next run sends them again (nothing is
  lost) and counts them; against a gateway that ignores idempotency keys (FCM) that bounds the duplicates.
- Outcomes go to the ledger in batches: every 0.1 s, or as soon as 1/16 of the window waits (20 ms apart at least).
"""
from __future__ import annotations

import asyncio
import gc
import heapq
import logging
import random
import signal
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from delivery.gateway import AUTH, DEAD_TOKEN, OK, REJECTED, Outcome
from delivery.ledger import ACKED, DEAD, PENDING

log = logging.getLogger(__name__)


class DeliveryAuthError(RuntimeError):
    pass


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    deadline_s: float = 3300.0
    ramp_s: float = 0.0

    @classmethod
    def from_config(cls, gw, ramp: bool = True) -> "RetryPolicy":
        return cls(gw.max_attempts, gw.backoff_base_s, gw.backoff_cap_s, gw.deadline_minutes * 60,
                   gw.ramp_minutes * 60 if ramp else 0.0)

    def backoff(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0, min(self.backoff_cap_s, self.backoff_base_s * 2 ** (attempt - 1)))


@dataclass
class Report:
    total: int = 0
    acked: int = 0
    dead_letter: Counter = field(default_factory=Counter)
    retries: int = 0
    requests: int = 0
    seconds: float = 0.0
    dead_tokens: list = field(default_factory=list)     # (user_id, idempotency_key) of 404s
    aborted: str | None = None
    held_elsewhere: int = 0                               # claimed by another live run: not sent by this one

    @property
    def pending(self) -> int:
        return self.total - self.acked - sum(self.dead_letter.values()) - self.held_elsewhere

    def as_dict(self) -> dict:
        return {"total": self.total, "acked": self.acked, "dead_letter": dict(self.dead_letter),
                "pending": self.pending, "retries": self.retries, "requests": self.requests,
                "seconds": round(self.seconds, 3), "rate_per_s": round(self.acked / self.seconds, 1) if self.seconds else 0,
                "dead_tokens": len(self.dead_tokens), "aborted": self.aborted, "held_elsewhere": self.held_elsewhere}


async def deliver(messages: list[dict], client, bucket, concurrency: int, policy: RetryPolicy,
                  record=None, attempts: dict | None = None, progress_every: float = 5.0, seed: int = 0,
                  claim=None, heartbeat=None, max_in_doubt: int = 256, stop_on_signals: bool = False) -> Report:
    """Send every message until it is acked or dead-lettered (or the run is aborted on an auth error).
    record(list[dict]) persists outcomes (the ledger); attempts: attempts already made per key;
    claim(keys) -> the keys this run may send (the ledger's send intent, committed before sending);
    heartbeat() -> False when the run lost its lease (it then stops, leaving the rest to the new holder);
    stop_on_signals: SIGTERM/SIGINT stop the run cleanly (in-flight answers recorded, the rest stays pending)."""
    rng = random.Random(seed)
    rep = Report(total=len(messages))
    attempts = dict(attempts or {})
    start = time.monotonic()
    deadline = start + policy.deadline_s
    n = max(len(messages), 1)
    fresh = deque((start + (i / n) * policy.ramp_s, m) for i, m in enumerate(messages))   # in release order
    retries: list = []                                                                     # (due, seq, m)
    seq = 0
    ready: asyncio.Queue = asyncio.Queue(maxsize=concurrency)
    wake = asyncio.Event()
    flush_now = asyncio.Event()
    inflight = 0
    buffer: list[dict] = []
    abort = asyncio.Event()
    window = max(int(max_in_doubt), concurrency) if claim else None
    outstanding = 0          # claimed by this run, outcome not yet committed to the ledger

    def done(m: dict, state: str, out: Outcome | None, reason: str | None = None) -> None:
        key = m["idempotency_key"]
        buffer.append({"key": key, "state": state, "attempts": attempts.get(key, 0),
                       "last_status": out.status if out else None, "reason": reason,
                       "message_name": out.name if out else None,
                       "acked_at": time.time() if state == ACKED else None})
        if window and len(buffer) * 16 >= window:
            flush_now.set()

    async def flusher() -> None:
        # every 0.1 s, sooner when 1/16 of the in-doubt window waits, but not more often than every 20 ms: what
        # a kill -9 repeats is about what was acknowledged and not yet committed, so commit often, in batches
        beat = time.monotonic()
        while not finished.is_set():
            try:
                await asyncio.wait_for(flush_now.wait(), timeout=0.1)
            except asyncio.TimeoutError:
                pass
            flush_now.clear()
            await flush()
            await asyncio.sleep(0.02)
            if heartbeat and time.monotonic() - beat >= 2.0:
                beat = time.monotonic()
                if not await asyncio.to_thread(heartbeat):
                    rep.aborted = "the run lost its lease (missed heartbeats); another run took over"
                    abort.set()
                    wake.set()

    async def flush() -> None:
        nonlocal outstanding
        if record and buffer:
            batch = buffer[:]
            del buffer[:len(batch)]
            await asyncio.to_thread(record, batch)
            outstanding -= len(batch)
            wake.set()

    async def progress() -> None:
        while True:
            await asyncio.sleep(progress_every)
            el = time.monotonic() - start
            rate = rep.acked / el if el else 0
            left = rep.pending
            eta = f"{left / rate:.0f}s" if rate > 0 else "?"
            log.info("delivery: sent %d/%d, failed %d, pending %d, retries %d, %.0f msg/s, ETA %s", rep.acked,
                     rep.total, sum(rep.dead_letter.values()), left, rep.retries, rate, eta)

    async def dispatcher() -> None:
        nonlocal inflight, outstanding
        while not abort.is_set():
            if flushing.done():             # the ledger failed: stop (raises its error) rather than send unrecorded
                flushing.result()
                raise RuntimeError("the ledger flusher stopped")
            now = time.monotonic()
            if retries and retries[0][0] <= now:                 # already claimed: no new intent needed
                inflight += 1
                await ready.put(heapq.heappop(retries)[2])
                continue
            room = (window - outstanding) if window else concurrency
            if fresh and fresh[0][0] <= now and room > 0:
                chunk = []
                while fresh and fresh[0][0] <= now and len(chunk) < room:
                    chunk.append(fresh.popleft()[1])
                if claim:
                    held = await asyncio.to_thread(claim, [m["idempotency_key"] for m in chunk])
                    rep.held_elsewhere += sum(m["idempotency_key"] not in held for m in chunk)
                    chunk = [m for m in chunk if m["idempotency_key"] in held]
                    outstanding += len(chunk)
                for m in chunk:
                    if abort.is_set():                            # claimed, not sent: back to pending
                        done(m, PENDING, None, "not sent: the run was aborted")
                        continue
                    inflight += 1
                    await ready.put(m)
                continue
            if not fresh and not retries and inflight == 0:
                break
            due = [retries[0][0]] if retries else []
            if fresh and room > 0:
                due.append(fresh[0][0])
            elif fresh:
                flush_now.set()                                   # the in-doubt window is full: record, then go on
            wake.clear()
            try:
                await asyncio.wait_for(wake.wait(), timeout=max(min(due) - now, 0) if due else None)
            except asyncio.TimeoutError:
                pass
        for _, _, m in retries:                                   # aborted with retries waiting: back to pending
            done(m, PENDING, None, rep.aborted)
        for _ in range(concurrency):
            await ready.put(None)

    async def sender() -> None:
        nonlocal inflight, seq
        while True:
            m = await ready.get()
            if m is None:
                return
            if abort.is_set():          # stays pending: the run stops on the first auth error
                done(m, PENDING, None, rep.aborted)
                inflight -= 1
                continue
            key = m["idempotency_key"]
            attempts[key] = attempts.get(key, 0) + 1
            rep.requests += 1
            await bucket.take()         # right before the request: queueing cannot bunch what the bucket spread
            out = await client.send(m)
            if out.kind == OK:
                rep.acked += 1
                done(m, ACKED, out)
            elif out.kind == DEAD_TOKEN:
                rep.dead_letter["unregistered"] += 1
                rep.dead_tokens.append((m["user_id"], key))
                done(m, DEAD, out, "unregistered")
            elif out.kind == REJECTED:
                rep.dead_letter["rejected"] += 1
                done(m, DEAD, out, f"rejected: {out.error}")
            elif out.kind == AUTH:
                rep.aborted = f"gateway refused the credentials (HTTP {out.status} {out.error})"
                done(m, PENDING, out, rep.aborted)
                abort.set()
            else:
                delay = max(out.retry_after or 0.0, policy.backoff(attempts[key], rng))
                last = f"HTTP {out.status} {out.error or ''}".strip()
                if attempts[key] >= policy.max_attempts:
                    rep.dead_letter["retries_exhausted"] += 1
                    done(m, DEAD, out, f"retries exhausted after {attempts[key]}: {last}")
                elif time.monotonic() + delay > deadline:
                    rep.dead_letter["deadline"] += 1
                    done(m, DEAD, out, f"next try after the deadline (wait {delay:.0f}s): {last}")
                else:
                    rep.retries += 1
                    seq += 1
                    heapq.heappush(retries, (time.monotonic() + delay, seq, m))
            inflight -= 1
            wake.set()

    def terminate(signame: str) -> None:      # SIGTERM (Airflow, systemd, kill): finish what is in flight, record, stop
        if not abort.is_set():
            rep.aborted = f"stopped by {signame}: in-flight requests finished and recorded, the rest left pending"
            log.warning("delivery: %s", rep.aborted)
            abort.set()
            wake.set()

    loop = asyncio.get_running_loop()
    handled = []
    if stop_on_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                previous = signal.getsignal(sig)
                loop.add_signal_handler(sig, terminate, sig.name)
                handled.append((sig, previous))
            except (RuntimeError, ValueError, NotImplementedError):   # not the main thread: the caller's handlers
                pass
    finished = asyncio.Event()     # the flusher is stopped by this, never cancelled: a record in progress completes
    flushing = asyncio.create_task(flusher())
    tasks = [asyncio.create_task(progress())]
    # the batch and its heap are long-lived: keep the cyclic collector from re-walking them all the time
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    try:
        await asyncio.gather(dispatcher(), *[sender() for _ in range(concurrency)])
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()
        for t in tasks:
            t.cancel()
        finished.set()
        flush_now.set()
        await flushing
        for sig, previous in handled:          # the caller's handlers again (Airflow's task runner has its own)
            loop.remove_signal_handler(sig)
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        await flush()
        rep.seconds = time.monotonic() - start
    if rep.aborted and rep.aborted.startswith("gateway refused"):
        raise DeliveryAuthError(rep.aborted + f"; {rep.pending} messages left pending for a re-run")
    return rep
