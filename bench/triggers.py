"""Benchmark: trigger rules end to end, on the state `make run` leaves (the simulated world + its nightly).

(1) Replay: the trigger windows of the last simulated day (default 06:00-12:00 UTC, 15-minute windows), each
    decided and delivered to the local gateway — decisions by reason, seconds per window.
(2) Open rate on the simulator: the ground truth's open probability of the delivered trigger pushes at their
    send time, against the same day's Push 1.0 pushes (the simulator's history) and the Hermes nightly plan.
(3) Live latency: fresh price drops on favourited items are written with event times spread over the last
    window (now - 15 min .. now), the window ending now is run as the schedule would, and event time ->
    gateway acceptance is measured (median, p95) — what a user waits on the default schedule.

    make bench-triggers      (= source infra/env.sh; python bench/triggers.py [--ds 2026-10-30] [--from-hour 6] ...)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def sh(script: str, env: dict) -> None:
    out = subprocess.run(["bash", str(REPO / "infra" / script), "start"], env=env, capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stdout + out.stderr)


def truth_rate(truth, warehouse, user_ids, scene_ids, items, send_at_us) -> tuple[float, float]:
    """Mean true P(open) with the push's relevance/timeliness context, and without it."""
    from lab.simulator.ground_truth import push_context

    if len(user_ids) == 0:
        return float("nan"), float("nan")
    offsets = np.concatenate([[0], np.cumsum([len(i) for i in items])])
    flat = np.concatenate([np.asarray(i, dtype=np.int64) for i in items])
    at = np.asarray(send_at_us, dtype=np.int64)
    ctx = push_context(warehouse, user_ids, offsets, flat, at)
    args = (np.asarray(user_ids), np.asarray(scene_ids), offsets, flat, at)
    return float(truth.open_probability(*args, context=ctx).mean()), float(truth.open_probability(*args).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ds", default="2026-10-30", help="the last simulated day (the nightly's ds)")
    ap.add_argument("--from-hour", type=int, default=6)
    ap.add_argument("--to-hour", type=int, default=12)
    ap.add_argument("--live", type=int, default=300, help="fresh price drops for the latency run (0: skip it)")
    args = ap.parse_args()
    # run under infra/env.sh (make bench-triggers does): credentials and paths of HERMES_HOME come from there
    os.environ["HERMES_RECEIPT_TIME"] = "planned"
    env = dict(os.environ)

    import pandas as pd
    import pyarrow.dataset as pads

    from core.config.loader import load_config
    from core.settings import Settings
    from core.warehouse import Warehouse
    from jobs.triggers import run as run_window
    from lab.simulator.ground_truth import GroundTruth

    settings = Settings.from_env()
    wh = Warehouse(settings.warehouse)
    loaded = load_config(settings.conf_dir)
    prev = (date.fromisoformat(args.ds) - timedelta(days=1)).isoformat()
    if not wh.partition("features/user_features", prev).exists():
        print(f"computing features/user_features for {prev} (the trigger conditions read the day before)")
        for stage in ("rollups", "user_features"):
            subprocess.run([sys.executable, "-m", "jobs.cli", "stage", stage, "--ds", prev], env=env,
                           check=True, capture_output=True)
    sh("s3.sh", env)
    sh("gateway.sh", env)

    # (1) replay
    day = date.fromisoformat(args.ds)
    ends = [datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(minutes=15 * k)
            for k in range(args.from_hour * 4 + 1, args.to_hour * 4 + 1)]
    totals: dict = {"emitted": 0, "cancelled": 0, "suppressed": 0}
    reasons: dict = {}
    by_rule: dict = {}
    secs = []
    delivered = []
    for end in ends:
        t = time.perf_counter()
        out = run_window(settings, end, loaded)
        secs.append(time.perf_counter() - t)
        d = out["decided"]
        for k in totals:
            totals[k] += d.get(k, 0)
        for k, v in d.get("reasons", {}).items():
            reasons[k] = reasons.get(k, 0) + v
        for k, v in d.get("by_rule", {}).items():
            by_rule[k] = by_rule.get(k, 0) + v
        if out.get("delivery"):
            delivered.append(out["delivery"]["states"].get("acked", 0))
    print(f"(1) replay {args.ds} {args.from_hour:02d}:00-{args.to_hour:02d}:00 UTC: {len(ends)} windows, "
          f"{np.mean(secs):.1f} s per window (max {max(secs):.1f} s); decided {totals}, by rule {by_rule}, "
          f"suppressed/cancelled by reason {reasons}; delivered {sum(delivered):,}")

    # (2) open rates from the ground truth
    truth = GroundTruth.load(wh.ground_truth)
    log = pads.dataset(str(wh.raw_partition("push_log", args.ds)), format="parquet").to_table().to_pandas()
    log["sent_us"] = log["sent_at"].astype("int64") // (1000 if log["sent_at"].dtype.unit == "ns" else 1)
    trig = log[log["policy"].str.startswith("trigger:")]
    base = log[log["policy"].isin(["baseline", "explore"]) | ~log["policy"].str.startswith(("trigger:", "hermes"))]
    rows = [("triggered (Hermes)", trig), ("Push 1.0 nightly, same day", base)]
    plan_path = wh.partition("plan/windows", args.ds)
    if plan_path.exists():
        w = wh.read_arrow("plan/windows", args.ds).to_pandas()
        w = w[(w["policy"] == "hermes") & (w["slot"] >= 0)]
        w["sent_us"] = w["send_at"].astype("int64") // (1000 if w["send_at"].dtype.unit == "ns" else 1)
        rows.append(("Hermes nightly plan, next day", w))
    print("(2) expected open rate from the simulator's ground truth (mean true P(open) at the send time; "
          "with the relevance/timeliness terms, and without them):")
    groups = rows + [(f"  {rule}", g) for rule, g in trig.groupby("policy")]
    for name, df in groups:
        rate, plain = truth_rate(truth, wh.root, df["user_id"].to_numpy(), df["scene_id"].to_numpy(),
                                 list(df["item_ids"]), df["sent_us"].to_numpy())
        print(f"    {name:<34}{len(df):>8,} pushes   {100 * rate:6.2f}%   (without context {100 * plain:6.2f}%)")

    # (3) live latency on the default schedule
    if args.live <= 0:
        return
    os.environ["HERMES_RECEIPT_TIME"] = "accepted"
    settings = Settings.from_env()
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    end = now - timedelta(minutes=now.minute % 15)
    if end <= now - timedelta(minutes=1):
        end += timedelta(minutes=15)
    favs = pads.dataset(str(wh.raw("events")), format="parquet").to_table(
        columns=["user_id", "event_type", "item_id", "ts"]).to_pandas()
    # favourites recent enough for the rule's lookback (28 days before now), on items listed inside it
    horizon = pd.Timestamp(end - timedelta(days=27))
    items = pads.dataset(str(wh.raw("items")), format="parquet").to_table(columns=["item_id", "listed_at"]).to_pandas()
    fresh_items = set(items.loc[items["listed_at"] >= horizon, "item_id"])
    favs = favs[(favs["event_type"] == "fav") & (favs["ts"] >= horizon) & favs["item_id"].isin(fresh_items)]
    favs = favs.drop_duplicates("item_id").head(args.live)
    rng = np.random.default_rng(1)
    start_us = int((end - timedelta(minutes=15)).timestamp() * 1e6)
    stamps = start_us + rng.integers(0, 15 * 60 * 10**6, len(favs))
    import pyarrow as pa
    import pyarrow.parquet as pq

    from core.contract import RAW_SCHEMAS
    folder = wh.raw_partition("item_changes", end.date().isoformat())
    folder.mkdir(parents=True, exist_ok=True)
    t = pa.table({"item_id": pa.array(favs["item_id"].to_numpy(), pa.int64()),
                  "ts": pa.array(stamps, pa.int64()).cast(pa.timestamp("us", tz="UTC")), "change": ["price_drop"] * len(favs),
                  "price": pa.array([1.0] * len(favs), pa.float64())}, schema=RAW_SCHEMAS["item_changes"])
    pq.write_table(t, folder / f"live-{int(time.time())}.parquet")
    # the schedule fires at the window end: wait for it like the scheduler would
    wait = (end - datetime.now(timezone.utc)).total_seconds()
    if wait > 0:
        time.sleep(wait)
    out = run_window(settings, end, loaded)
    print(f"(3) live window ending {end:%H:%M} UTC: {args.live} fresh price drops on favourited items, event times "
          f"spread over the window; decided {json.dumps({k: out['decided'].get(k) for k in ('emitted', 'suppressed')})}"
          f"; event -> gateway acceptance: {out.get('latency_s')} (seconds); evaluate {out['evaluate_seconds']} s")


if __name__ == "__main__":
    main()
