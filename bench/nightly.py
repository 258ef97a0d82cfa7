"""Nightly stages at several world sizes: wall time, rows and peak memory (driver + JVM) per stage.

    .venv/bin/python bench/nightly.py --users 10000 200000 [--days 30]

Same code as the DAG (jobs.<stage>.run) with one Spark session per world; worlds are simulated into
$HERMES_HOME/bench/<users>/ first.
"""
from __future__ import annotations

import argparse
import importlib
import threading
import time
from dataclasses import replace

import psutil

from jobs.config.loader import load_config
from jobs.entry import spark_session
from jobs.settings import Settings
from jobs.simulator.market import WorldSpec, simulate
from jobs.tasks import STAGES


class PeakRSS:
    """Samples the RSS of this process and all its children (the Spark JVM) every 0.2 s."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = psutil.Process()
        while not self._stop.wait(0.2):
            procs = [me, *me.children(recursive=True)]
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def bench_world(base: Settings, users: int, days: int) -> list[dict]:
    home = base.home / "bench" / str(users)
    settings = replace(base, home=home, warehouse=home / "warehouse")
    spec = WorldSpec(users=users, items=2 * users, days=days)
    t0 = time.monotonic()
    counts = simulate(spec, settings.warehouse)
    rows = [{"users": users, "stage": "simulate", "seconds": time.monotonic() - t0, "rows": counts["events"],
             "peak_gb": None}]
    loaded = load_config(settings.conf_dir)
    with spark_session(settings, f"bench-{users}") as spark:
        for stage in STAGES:
            with PeakRSS() as mem:
                t0 = time.monotonic()
                out = importlib.import_module(f"jobs.{stage}").run(spark, settings, spec.last_ds, loaded)
                if stage == "train":
                    from jobs.train import gate

                    gate(settings, spec.last_ds, loaded)
                seconds = time.monotonic() - t0
            n = sum(t["rows"] for t in out["tables"].values()) if out["tables"] else out["training"]["train_rows"]
            rows.append({"users": users, "stage": stage, "seconds": seconds, "rows": n, "peak_gb": mem.peak / 2**30})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, nargs="+", default=[10_000, 200_000])
    p.add_argument("--days", type=int, default=30)
    args = p.parse_args()
    settings = Settings.from_env()
    results = []
    for n in args.users:
        results += bench_world(settings, n, args.days)
    print(f"\n{'users':>9} {'stage':<18}{'seconds':>9}{'rows out':>14}{'peak RSS GB':>13}")
    for r in results:
        peak = f"{r['peak_gb']:.2f}" if r["peak_gb"] is not None else "-"
        print(f"{r['users']:>9,} {r['stage']:<18}{r['seconds']:>9.1f}{r['rows']:>14,}{peak:>13}")


if __name__ == "__main__":
    main()
