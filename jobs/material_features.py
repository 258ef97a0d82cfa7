"""Nightly job: material features for items on sale at the end of `ds`, and smoothed historical rates.

Writes features/material_features and features/material_rates, partition ds=<ds>.
"""
from __future__ import annotations

import logging
from datetime import date, timedelta

from core.settings import Settings
from core.warehouse import Warehouse
from jobs.entry import as_of_end, spark_job_main

log = logging.getLogger(__name__)
FEATURES = "features/material_features"
RATES = "features/material_rates"
RATE_HISTORY_DAYS = 28


def run(spark, settings: Settings, ds: str, loaded) -> dict:
    from pyspark.sql import functions as F

    from features.materials import items_as_of, material_features, material_rates

    wh = Warehouse(settings.warehouse)
    as_of = as_of_end(ds)
    week = (date.fromisoformat(ds) - timedelta(days=7)).isoformat()
    items = items_as_of(wh.read_raw(spark, "items"), wh.read_raw(spark, "item_changes", last_ds=ds), as_of)
    events = wh.read_raw(spark, "events", week, ds)
    history = wh.read_raw(spark, "push_log", (date.fromisoformat(ds) - timedelta(days=RATE_HISTORY_DAYS)).isoformat(), ds)
    # the receipts whose opens can fall in the week's events: they mark the push-driven views
    receipts = history.where(F.col("ds") >= (date.fromisoformat(week) - timedelta(days=1)).isoformat())
    out = wh.write_tables(spark, {FEATURES: material_features(items, events, as_of, receipts),
                                  RATES: material_rates(history, items, as_of)}, ds, loaded.version)
    log.info("ds=%s: %s", ds, out)
    return {"ds": ds, "config_version": loaded.version, "tables": out}


def main(argv=None) -> None:
    spark_job_main(run, "material_features", __doc__, argv)


if __name__ == "__main__":
    main()
