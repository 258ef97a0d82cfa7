"""Nightly job: scene audiences (user x scene) from the configured rules over the run's user features.

Nightly scenes only (scheduled and personalised-time); real-time scenes are evaluated by the hourly run.
Writes plan/audiences, partition ds=<ds>.
"""
from __future__ import annotations

import logging

from core.settings import Settings
from core.warehouse import Warehouse
from jobs.entry import spark_job_main

log = logging.getLogger(__name__)
TABLE = "plan/audiences"
NIGHTLY_TRIGGERS = ("scheduled", "personalised_time")


def run(spark, settings: Settings, ds: str, loaded) -> dict:
    from features.audiences import audiences

    wh = Warehouse(settings.warehouse)
    rules = {s.id: s.audience for s in loaded.config.enabled_scenes if s.trigger in NIGHTLY_TRIGGERS}
    df = audiences(wh.read_partition(spark, "features/user_features", ds), rules)
    path = wh.write_partition(df, TABLE, ds, loaded.version)
    written = spark.read.parquet(str(path))
    by_scene = {r["scene_id"]: r["count"] for r in written.groupBy("scene_id").count().collect()}
    log.info("audiences ds=%s: %s", ds, by_scene)
    return {"ds": ds, "config_version": loaded.version, "tables": {TABLE: {"path": str(path),
            "rows": sum(by_scene.values())}}, "by_scene": dict(sorted(by_scene.items()))}


def main(argv=None) -> None:
    spark_job_main(run, "audiences", __doc__, argv)


if __name__ == "__main__":
    main()
