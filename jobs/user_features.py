"""Nightly job: user features and per-scene push history as of the end of `ds`.

Writes features/user_features and features/user_scene_history, partition ds=<ds>.
"""
from __future__ import annotations

import logging
from datetime import date, timedelta

from core.settings import Settings
from core.warehouse import Warehouse
from jobs.entry import as_of_end, spark_job_main

log = logging.getLogger(__name__)
TABLE = "features/user_features"
HISTORY = "features/user_scene_history"


def run(spark, settings: Settings, ds: str, loaded) -> dict:
    from features.materials import items_as_of
    from features.user_features import LOOKBACK_DAYS, scene_history, user_features
    from jobs.rollups import read_activity

    wh = Warehouse(settings.warehouse)
    as_of = as_of_end(ds)
    first = (date.fromisoformat(ds) - timedelta(days=LOOKBACK_DAYS)).isoformat()
    users = wh.read_raw(spark, "users")
    events = read_activity(spark, wh, first, ds)    # the events' daily rollups (jobs/rollups.py)
    pushes = wh.read_raw(spark, "push_log", first, ds)
    on_sale = (items_as_of(wh.read_raw(spark, "items"), wh.read_raw(spark, "item_changes", last_ds=ds), as_of)
               .where("status = 'on_sale'").select("item_id", "seller_id"))
    weekend = tuple(loaded.config.platform.windows.weekend_days)
    out = wh.write_tables(spark, {TABLE: user_features(users, events, pushes, as_of, on_sale, weekend),
                                  HISTORY: scene_history(pushes, as_of)}, ds, loaded.version)
    log.info("ds=%s: %s", ds, out)
    return {"ds": ds, "config_version": loaded.version, "tables": out}


def main(argv=None) -> None:
    spark_job_main(run, "user_features", __doc__, argv)


if __name__ == "__main__":
    main()
