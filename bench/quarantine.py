"""What the quarantine's own row rules add to raw validation on a large events day (1M users: 5.9-7.0M events a
day): exact duplicates (Arrow hashes, exact comparison only where hashes collide) against pandas' duplicated over
all rows, and the dimension id checks. Prints seconds; the GX suite itself is measured by the nightly bench.

    .venv/bin/python bench/quarantine.py [--rows 7000000]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import numpy as np
    import pyarrow as pa

    from expectations.quarantine import duplicate_rows, unknown_ids

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rows", type=int, default=7_000_000)
    p.add_argument("--users", type=int, default=1_000_000)
    n = p.parse_args().rows
    users = p.parse_args().users
    rng = np.random.default_rng(0)
    t = pa.table({
        "ts": pa.array(rng.integers(0, 86_400_000_000, n) + 1_790_000_000_000_000, pa.int64()).cast(
            pa.timestamp("us", tz="UTC")),
        "user_id": pa.array(rng.integers(0, users, n), pa.int64()),
        "event_type": pa.array(rng.choice(["app_open", "view", "fav", "cart", "chat", "buy", "search"], n)),
        "item_id": pa.array(rng.integers(0, 2 * users, n), pa.int64()),
        "seller_id": pa.nulls(n, pa.int64()), "category_id": pa.array(rng.integers(0, 50, n), pa.int32())})
    planted = pa.concat_tables([t, t.slice(0, 100)])        # 100 exact duplicates
    cols = t.column_names
    t0 = time.perf_counter()
    dup = duplicate_rows(planted, cols)
    arrow_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = planted.to_pandas().duplicated(keep="first").to_numpy()
    pandas_s = time.perf_counter() - t0
    assert (dup == ref).all() and dup.sum() == 100, "the hashed path must find exactly the planted duplicates"
    known = pa.array(np.arange(users), pa.int64())
    t0 = time.perf_counter()
    bad = unknown_ids(planted, "user_id", known)
    ids_s = time.perf_counter() - t0
    print(f"{planted.num_rows:,} events rows, {users:,} users")
    print(f"exact duplicates, Arrow hashes: {arrow_s:6.2f} s  (found {int(dup.sum())})")
    print(f"exact duplicates, pandas:       {pandas_s:6.2f} s  (same rows; x{pandas_s / arrow_s:.1f} slower)")
    print(f"user ids in raw/users:          {ids_s:6.2f} s  (unknown {int(bad.sum())})")


if __name__ == "__main__":
    main()
