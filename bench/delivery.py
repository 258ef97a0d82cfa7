"""Benchmark: delivery throughput against the local gateway process on this machine.

(1) sustained throughput with no rate limit (the sender's own ceiling, gateway on the same 2 cores), with
    the ledger recording every outcome and every send intent (claim) committed before its request, as in
    production; then the same without claims (the sender before exactly-once), in the same process;
(2) a configured rate (default 1,000 msg/s) held for 60 s: the achieved rate measured from the gateway's
    own request log, and the worst 1-second window against rate + burst.

    .venv/bin/python bench/delivery.py [--messages 60000] [--rate 1000] [--seconds 60]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from delivery.batches import idempotency_key  # noqa: E402
from delivery.gateway import gateway_client  # noqa: E402
from delivery.ledger import Ledger  # noqa: E402
from delivery.ratelimit import TokenBucket, Unlimited  # noqa: E402
from delivery.sender import RetryPolicy, deliver  # noqa: E402

TOKEN = "bench-token-0123456789abcdef"


def messages(n: int, tag: str) -> list[dict]:
    return [{"idempotency_key": idempotency_key(u, tag, "2026-10-31", "nightly"), "user_id": u,
             "device_token": f"device-{u:09d}", "platform": "ios", "scene_id": tag, "title": "Fresh in category 3",
             "body": "A lamp for ¥30 and 2 more picked for you.", "item_ids": [u, u + 1, u + 2], "hour": 12,
             "send_day": "2026-10-31", "window": tag, "planned_at": 0.0, "policy": "hermes", "propensity": 1.0}
            for u in range(1, n + 1)]


def start_gateway(home: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "HERMES_GATEWAY_TOKEN": TOKEN}
    p = subprocess.Popen([sys.executable, str(REPO / "infra" / "gateway.py"), "--port", str(port), "--db",
                          str(home / "receipts.sqlite")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    import urllib.request
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return p
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("gateway did not start")


async def run(msgs, port, bucket, concurrency, ledger, claims: bool = True):
    client = gateway_client(f"http://127.0.0.1:{port}", "hermes-local", TOKEN, concurrency, 10.0)
    try:
        ledger.load(msgs, "bench")
        run_id = ledger.acquire(f"bench/{msgs[0]['scene_id']}")
        try:
            return await deliver(msgs, client, bucket, concurrency, RetryPolicy(), record=ledger.record,
                                 progress_every=10.0, claim=(lambda keys: ledger.claim(keys, run_id)) if claims else None,
                                 heartbeat=lambda: ledger.heartbeat(run_id))
        finally:
            ledger.release(run_id)
    finally:
        await client.close()


def window_stats(db: Path, tag_prefix: str, since: float) -> tuple[float, int, int]:
    c = sqlite3.connect(str(db))
    t = [r[0] for r in c.execute("SELECT at FROM requests WHERE at >= ? ORDER BY at", (since,))]
    j = worst = 0
    for i in range(len(t)):
        while t[i] - t[j] >= 1.0:
            j += 1
        worst = max(worst, i - j + 1)
    return (len(t) - 1) / (t[-1] - t[0]), worst, len(t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=60_000, help="for the unlimited run")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--burst", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    home = Path(tempfile.mkdtemp(prefix="hermes-bench-delivery-"))
    port = 28480
    gw = start_gateway(home, port)
    try:
        ledger = Ledger(f"sqlite:///{home}/ledger.sqlite")
        msgs = messages(args.messages, "unlimited")
        rep = asyncio.run(run(msgs, port, Unlimited(), args.concurrency, ledger))
        ticks = os.sysconf("SC_CLK_TCK")
        stat = Path(f"/proc/{gw.pid}/stat").read_text().split()
        print(f"    gateway CPU so far {(int(stat[13]) + int(stat[14])) / ticks:.1f} s; sender CPU "
              f"{time.process_time():.1f} s")
        print(f"(1) no rate limit: {rep.acked:,} messages in {rep.seconds:.1f} s = {rep.acked / rep.seconds:,.0f} msg/s "
              f"(concurrency {args.concurrency}, ledger and send intents on, at most 256 in doubt; target >= 5,000 msg/s)")
        old = asyncio.run(run(messages(args.messages, "no-claims"), port, Unlimited(), args.concurrency, ledger, False))
        print(f"    the same without send intents: {old.acked / old.seconds:,.0f} msg/s; intents cost "
              f"{100 * (1 - (rep.acked / rep.seconds) / (old.acked / old.seconds)):.0f} % of the throughput")
        n = int(args.rate * args.seconds)
        msgs = messages(n, "limited")
        since = time.time()
        rep = asyncio.run(run(msgs, port, TokenBucket(args.rate, args.burst), args.concurrency, ledger))
        achieved, worst, count = window_stats(home / "receipts.sqlite", "limited", since)
        print(f"(2) configured {args.rate:,.0f} msg/s, burst {args.burst}: {count:,} requests over "
              f"{rep.seconds:.1f} s, achieved {achieved:,.1f} msg/s at the gateway "
              f"({100 * (achieved / args.rate - 1):+.2f}%; target within 2%); worst 1-s window {worst} "
              f"(limit rate + burst = {args.rate + args.burst:,.0f})")
    finally:
        os.killpg(gw.pid, 15)
        gw.wait()


if __name__ == "__main__":
    main()
