"""Benchmark: send-window assignment for N planned pushes x 24 hourly slots under a binding capacity.

Runs exactly what the `windows` stage runs after reading its inputs — hour profiles, local hours, allowed
slots, per-slot values, the capacity-constrained assignment with exploration, and the Push 1.0 fixed-hour
baseline — on a synthetic plan shaped like the simulator's (time-zone mix, evening-heavy app opens, spacing
that starts some users late, quiet hours 22-8). Prints each step's time and peak memory, and checks that no
hour exceeds its capacity.

    .venv/bin/python bench/windows.py --users 1000000 --capacity 70000
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.windows import allowed_slots, assign, explorers, fixed_hour, hour_profiles, local_hours, slot_starts, slot_values, user_hash  # noqa: E402
from lab.simulator.ground_truth import TIMEZONE_SHARES, TIMEZONES  # noqa: E402

US = 1_000_000


def synthetic_plan(n: int, seed: int, send_day: str):
    rng = np.random.default_rng(seed)
    tz = np.array(TIMEZONES)[rng.choice(len(TIMEZONES), size=n, p=TIMEZONE_SHARES)]
    # app opens by local hour: a personal peak around the evening, spread +-3 h, 0-60 opens in 28 days
    peak = np.clip(rng.normal(20, 2.5, n).round(), 8, 23).astype(np.int64)
    hours = (peak[:, None] + rng.normal(0, 3, (n, 30)).round().astype(np.int64)) % 24
    n_opens = rng.poisson(rng.gamma(1.2, 15, n))
    app = np.zeros((n, 24), dtype=np.int32)
    for k in range(30):
        np.add.at(app, (np.arange(n), hours[:, k]), (k < n_opens).astype(np.int32))
    push = (app * rng.binomial(1, 0.05, (n, 24))).astype(np.int32)
    starts = slot_starts(send_day)
    day0 = int(starts[0].timestamp()) * US
    # the local plan day: from local midnight of the send day to the next one, in UTC
    lh0 = local_hours(starts[:1], tz)[:, 0].astype(np.int64)
    local_midnight = day0 - lh0 * 3600 * US
    earliest = local_midnight + np.where(rng.random(n) < 0.1, rng.integers(8, 20, n), 0) * 3600 * US
    end = local_midnight + 24 * 3600 * US
    p_ref = rng.beta(2, 12, n)
    return tz, app, push, earliest, end, p_ref, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--capacity", type=int, default=70_000, help="pushes per UTC hour")
    ap.add_argument("--explore", type=float, default=0.05)
    ap.add_argument("--elasticity", type=float, default=0.67, help="model log-odds per unit of log hour share")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    day = "2026-10-31"
    t = {}
    t0 = time.perf_counter()
    tz, app, push, earliest, end, p_ref, peak = synthetic_plan(args.users, args.seed, day)
    t["synthesise inputs (not part of the stage)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    starts = slot_starts(day)
    q, _ = hour_profiles(app, push, 3.0, 24.0)
    t["hour profiles"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    lh = local_hours(starts, tz)
    ok = allowed_slots(starts, lh, earliest, end, (22, 8), first_slot=1)
    t["local hours + allowed slots"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    v = slot_values(p_ref, q, peak, lh, ok, args.elasticity)
    t["per-slot open probabilities"] = time.perf_counter() - t0
    cap = np.full(24, args.capacity, dtype=np.int64)
    users = np.arange(args.users, dtype=np.int64)
    t0 = time.perf_counter()
    a = assign(v, cap, explorers(users, day, args.explore), args.explore, seed=7)
    t["assignment (Hermes, capacity + exploration)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    b = fixed_hour(v, lh, 20, cap, np.argsort(user_hash(users, day), kind="stable"))
    t["baseline (fixed local hour, spill)"] = time.perf_counter() - t0
    stage = sum(s for k, s in t.items() if not k.startswith("synthesise"))

    print(f"send windows: {args.users:,} planned pushes x 24 slots, capacity {args.capacity:,}/h, "
          f"exploration {args.explore:.0%}")
    for k, s in t.items():
        print(f"  {k:<46}{s:8.2f} s")
    print(f"  {'stage total (everything but synthesis)':<46}{stage:8.2f} s   (target <= 60 s)")
    print(f"  peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")
    st = a.stats
    print(f"Hermes:   assigned {st['assigned']:,}, explored {st['explored']:,}, no window {st['no_window']:,}, "
          f"no capacity {st['no_capacity']:,}; price iterations {st['price_iterations']}")
    print(f"          expected opens {st['expected_opens']:,.0f} vs unconstrained {st['expected_opens_unconstrained']:,.0f}"
          f" -> loss {100 * st['loss_vs_unconstrained']:.2f}% (of which exploration {st['exploration_cost']:,.0f} opens)")
    print(f"          LP upper bound {st['upper_bound']:,.0f} -> at most {100 * st['gap_to_upper_bound']:.3f}% below the "
          "optimum under capacity")
    print(f"          busiest hour {a.load.max():,} / capacity {args.capacity:,}; hours at capacity "
          f"{int((a.load == cap).sum())}")
    print(f"baseline: assigned {b.stats['assigned']:,}, expected opens {b.stats['expected_opens']:,.0f}, "
          f"busiest hour {b.load.max():,}")
    if (a.load > cap).any() or (b.load > cap).any():
        sys.exit("FAIL: an hour exceeds its capacity")


if __name__ == "__main__":
    main()
