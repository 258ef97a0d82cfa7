"""Nightly job: feeds and scene selection for Hermes, and the Push 1.0 baseline beside them.

Writes plan/selected (one row per user: scene, feed, expected opens, model version) and plan/baseline
(one global scene, one material), partition ds=<ds>.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from jobs.entry import as_of_end, spark_job_main
from jobs.settings import Settings
from jobs.warehouse import Warehouse

log = logging.getLogger(__name__)
SELECTED = "plan/selected"
BASELINE = "plan/baseline"


def run(spark, settings: Settings, ds: str, loaded) -> dict:
    from pyspark.sql import functions as F

    from features.selection import baseline, baseline_scene, exclude_recent, feeds, select_scene
    from jobs.audiences import NIGHTLY_TRIGGERS

    wh = Warehouse(settings.warehouse)
    scenes = [s for s in loaded.config.enabled_scenes if s.trigger in NIGHTLY_TRIGGERS]
    scene_df = spark.createDataFrame([(s.id, s.feed_size, s.priority) for s in scenes],
                                     "scene_id string, feed_size int, priority int")
    scored = wh.read_partition(spark, "plan/scored", ds)
    # the user x item re-eligibility gap of the trigger rules holds for the nightly plan too
    gap_h = max([t.regap_hours for t in loaded.config.triggers if t.enabled] + [0])
    if gap_h:
        since = as_of_end(ds) - timedelta(hours=gap_h)
        first = (since.date() - timedelta(days=1)).isoformat()
        scored = exclude_recent(scored, wh.read_raw(spark, "push_log", first, ds), since)
    items = wh.read_partition(spark, "features/material_features", ds)
    chosen = select_scene(feeds(scored, items, scene_df, loaded.config.platform.feed.max_per_category))
    s_path = wh.write_partition(chosen, SELECTED, ds, loaded.version)

    best = baseline_scene(wh.read_partition(spark, "features/material_rates", ds), [s.id for s in scenes])
    # Push 1.0 drew its item from the user's most engaged category when it could
    top = wh.read_partition(spark, "features/user_features", ds).select(
        "user_id", F.try_element_at("top_categories", F.lit(1)).alias("_top_category"))
    pool = (scored.join(items.select("item_id", "category_id"), "item_id", "left").join(top, "user_id", "left")
            .withColumn("preferred", F.coalesce(F.col("category_id") == F.col("_top_category"), F.lit(False))))
    base = baseline(pool, wh.read_partition(spark, "plan/eligible", ds), best,
                    loaded.config.platform.baseline_explore_share, salt=f"hermes-baseline-{ds}")
    b_path = wh.write_partition(base, BASELINE, ds, loaded.version)
    sel = spark.read.parquet(str(s_path))
    mix = {r["scene_id"]: r["count"] for r in sel.groupBy("scene_id").count().collect()}
    n_base = spark.read.parquet(str(b_path)).count()
    log.info("selected %d users across %d scenes %s; baseline scene %s for %d users", sum(mix.values()), len(mix),
             mix, best, n_base)
    return {"ds": ds, "config_version": loaded.version, "baseline_scene": best, "scene_mix": dict(sorted(mix.items())),
            "tables": {SELECTED: {"path": str(s_path), "rows": sum(mix.values())},
                       BASELINE: {"path": str(b_path), "rows": n_base}}}


def main(argv=None) -> None:
    spark_job_main(run, "select", __doc__, argv)


if __name__ == "__main__":
    main()
