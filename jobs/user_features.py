"""Nightly job: compute user features as of the end of `ds` and write features/user_features/ds=<ds>.

Thin: reads the raw window, calls `features.user_features.user_features`, writes one partition.
"""
from __future__ import annotations

import argparse
import logging
from datetime import date, datetime, time, timedelta, timezone

from jobs.settings import Settings
from jobs.warehouse import Warehouse

log = logging.getLogger(__name__)
TABLE = "features/user_features"


def as_of_end(ds: str) -> datetime:
    """A run for ds sees everything strictly before the next UTC midnight."""
    return datetime.combine(date.fromisoformat(ds) + timedelta(days=1), time.min, tzinfo=timezone.utc)


def run(spark, settings: Settings, ds: str) -> dict:
    from features.user_features import LOOKBACK_DAYS, user_features

    wh = Warehouse(settings.warehouse)
    first = (date.fromisoformat(ds) - timedelta(days=LOOKBACK_DAYS)).isoformat()
    users = wh.read_raw(spark, "users")
    events = wh.read_raw(spark, "events", first, ds)
    pushes = wh.read_raw(spark, "push_log", first, ds)
    out = user_features(users, events, pushes, as_of_end(ds))
    path = wh.write_partition(out, TABLE, ds)
    rows = spark.read.parquet(str(path)).count()
    log.info("wrote %s rows to %s", rows, path)
    return {"table": TABLE, "ds": ds, "path": str(path), "rows": rows}


def main(argv: list[str] | None = None) -> None:
    from jobs.spark import build_spark

    logging.basicConfig(level=logging.INFO)
    p = argparse.ArgumentParser(prog="python -m jobs.user_features", description=__doc__)
    p.add_argument("--ds", required=True)
    args = p.parse_args(argv)
    settings = Settings.from_env()
    spark = build_spark(settings, "hermes-user-features")
    try:
        print(run(spark, settings, args.ds))
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
