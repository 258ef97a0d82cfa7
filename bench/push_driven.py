"""What keeping push-driven events out of the rollups costs: the `rollups` stage of one steady night (the newest
events partition rolled up again, as a night does) with the split into organic and push-driven events
(features.rollups.push_driven: a semi and an anti join of the events against the receipts) and without it (every
event organic, as before 2026-12-07), alternately in one process and one SparkSession, on a simulated world.

    python bench/push_driven.py --users 200000 --days 30 --repeats 2

The world is simulated into $HERMES_HOME (var/bench/push_driven-<users> by default) once and kept. Prints the wall time
of each run, the medians and their ratio, and the events found push-driven.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=200_000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    root = Path(__file__).resolve().parents[1]
    os.environ.setdefault("HERMES_HOME", str(root / "var" / "bench" / f"push_driven-{args.users}"))

    from pyspark.sql import functions as F

    import features.rollups as fr
    from core.config.loader import load_config
    from core.settings import Settings
    from core.warehouse import Warehouse
    from jobs import rollups
    from jobs.entry import spark_session
    from lab.simulator.market import WorldSpec, simulate

    settings = Settings.from_env()
    spec = WorldSpec(users=args.users, items=2 * args.users, days=args.days, seed=args.seed,
                     start=date(2026, 10, 1), variant="base")
    wh = Warehouse(settings.warehouse)
    if not wh.raw("events").exists():
        t0 = time.perf_counter()
        simulate(spec, settings.warehouse)
        print(f"simulated {args.users:,} users x {args.days} days in {time.perf_counter() - t0:.0f} s")
    last = spec.last_ds
    loaded = load_config(settings.conf_dir)
    split, whole = fr.push_driven, (lambda events, push_log: events.withColumn("via_push", F.lit(False)))
    with spark_session(settings, "bench-push-driven") as spark:
        t0 = time.perf_counter()
        first = rollups.run(spark, settings, last, loaded)
        print(f"first night: {len(first['rolled_up'])} partitions rolled up in {time.perf_counter() - t0:.0f} s, "
              f"{first['push_driven_events']:,} events push-driven")
        times: dict[str, list[float]] = {"with the split": [], "without": []}
        for _ in range(args.repeats):
            for name, fn in (("without", whole), ("with the split", split)):
                fr.push_driven = fn
                # the newest partition's source file gone: the stage rolls exactly that day up again
                rollups._source_file(wh, last).unlink()
                t0 = time.perf_counter()
                out = rollups.run(spark, settings, last, loaded)
                times[name].append(time.perf_counter() - t0)
                assert out["rolled_up"] == [last], out
                print(f"  {name:>15}: {times[name][-1]:6.1f} s, push-driven events {out['push_driven_events']:,}")
        fr.push_driven = split
    a, b = statistics.median(times["with the split"]), statistics.median(times["without"])
    day_before = (date.fromisoformat(last) - timedelta(days=1)).isoformat()
    print(f"rollups of one steady night ({last}; receipts of {day_before} and {last}), {args.users:,} users: "
          f"{a:.1f} s with the split, {b:.1f} s without: x{a / b:.2f}")


if __name__ == "__main__":
    main()
