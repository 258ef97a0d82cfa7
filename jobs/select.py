"""Nightly job: feeds and scene selection for Hermes, and the Push 1.0 baseline beside them.

Writes plan/selected (one row per user: scene, feed, expected opens, model version) and plan/baseline
(one global scene, one material), partition ds=<ds>.
"""
from __future__ import annotations

import logging

from core.settings import Settings
from core.warehouse import Warehouse
from jobs.entry import Phases, spark_job_main

log = logging.getLogger(__name__)
SELECTED = "plan/selected"
BASELINE = "plan/baseline"


def run(spark, settings: Settings, ds: str, loaded) -> dict:
    from pyspark.sql import functions as F

    from features.candidates import OWN_LISTINGS
    from features.selection import baseline, baseline_salt, baseline_scene, feeds, mark_preferred, select_scene, shrink_to_support
    from jobs.audiences import NIGHTLY_TRIGGERS
    from training.prior import PRIOR

    wh = Warehouse(settings.warehouse)
    phase = Phases("select", ds, log)

    scenes = [s for s in loaded.config.enabled_scenes if s.trigger in NIGHTLY_TRIGGERS]
    scene_df = spark.createDataFrame([(s.id, s.feed_size, s.priority) for s in scenes],
                                     "scene_id string, feed_size int, priority int")
    # already without the pairs inside the trigger rules' re-eligibility gap (jobs/score.py drops them before
    # the shortlist, so the shortlist is of what may be sent)
    scored = wh.read_partition(spark, "plan/scored", ds)
    items = wh.read_partition(spark, "features/material_features", ds)
    rates = wh.read_partition(spark, "features/material_rates", ds)
    feed_cfg = loaded.config.platform.feed
    model_version, model_policy = _model_policy(settings, scored)
    explore = (loaded.config.platform.training.cold_start_explore_share if model_policy == PRIOR
               else feed_cfg.explore_share)
    # what a longer feed adds over its lead item, what each scene and a feed of something the user wants turned out
    # worth against the model's estimate, as Hermes' own pushes have shown it (nothing until they have)
    recal = _recalibration(wh, ds, model_version)
    breadth = recal.c
    feed, support = shrink_to_support(feeds(scored, items, scene_df, feed_cfg.max_per_category, feed_cfg.reserves,
                                            interest_weight=recal.interest,
                                            own_listing_scenes=tuple(s.id for s in scenes
                                                                     if s.materials.source == OWN_LISTINGS)),
                                      rates, feed_cfg.support_sends, scenes=[s.id for s in scenes])
    chosen = select_scene(feed, explore, salt=f"hermes-scene-{ds}", breadth=breadth, scene_offsets=recal.scene,
                          interest=recal.interest)
    s_path = wh.write_partition(chosen, SELECTED, ds, loaded.version)
    phase("feeds_and_scenes")

    reach = {r["scene_id"]: r["users"] for r in
             scored.groupBy("scene_id").agg(F.countDistinct("user_id").alias("users")).collect()}
    best = baseline_scene(rates, [s.id for s in scenes], reach=reach)
    phase("baseline_scene")
    # Push 1.0 drew its item from the user's most engaged category when it could; plan/scored holds each
    # (user, scene)'s draw from all its candidates (jobs/score.py), so drawing again here picks the same item
    pool = mark_preferred(scored, items, wh.read_partition(spark, "features/user_features", ds))
    base = baseline(pool, wh.read_partition(spark, "plan/eligible", ds), best,
                    loaded.config.platform.baseline_explore_share, salt=baseline_salt(ds))
    b_path = wh.write_partition(base, BASELINE, ds, loaded.version)
    phase("baseline")
    sel = spark.read.parquet(str(s_path))
    mix = {r["scene_id"]: r["count"] for r in sel.groupBy("scene_id").count().collect()}
    n_base = spark.read.parquet(str(b_path)).count()
    log.info("selected %d users across %d scenes %s; baseline scene %s for %d users; the model's weight per scene "
             "(history support) %s", sum(mix.values()), len(mix), mix, best, n_base,
             {k: round(v, 3) for k, v in sorted(support.items())})
    return {"ds": ds, "config_version": loaded.version, "model_version": model_version, "model_policy": model_policy,
            "scene_explore_share": explore, "feed_breadth": breadth, "interest_term": recal.interest,
            "scene_offsets": {k: round(v, 4) for k, v in sorted(recal.scene.items())},
            "baseline_scene": best, "scene_mix": dict(sorted(mix.items())), "phase_seconds": phase.seconds,
            "model_weight_by_scene": {k: round(v, 4) for k, v in sorted(support.items())},
            "tables": {SELECTED: {"path": str(s_path), "rows": sum(mix.values())},
                       BASELINE: {"path": str(b_path), "rows": n_base}}}


def _recalibration(wh: Warehouse, ds: str, model_version: str | None):
    """The model version's recalibration (jobs/windows.py applies the same one): the scene choice compares feeds with
    its feed-length term c and its scenes' offsets."""
    from features.windows import Recalibration

    if model_version is None:
        return Recalibration()
    from jobs.windows import version_recalibration

    recal = version_recalibration(model_version, wh, ds)
    if recal.c or recal.scene or recal.interest:
        log.info("select %s: feeds compared with %+.3f log-odds per log item, %+.3f for an item of the user's interest "
                 "and scene offsets %s (%s)", ds, recal.c, recal.interest,
                 {k: round(v, 3) for k, v in sorted(recal.scene.items())}, recal.reason)
    return recal


def _model_policy(settings: Settings, scored) -> tuple[str | None, str | None]:
    """The model version that scored the plan, and whether it is the prior (cold start) or a trained one."""
    from training.registry import configure_mlflow, version_policy

    row = scored.select("model_version").limit(1).collect()
    if not row:
        return None, None
    configure_mlflow(settings.mlflow_tracking_uri, settings.home / "mlflow" / "artifacts")
    return str(row[0]["model_version"]), version_policy(row[0]["model_version"])


def main(argv=None) -> None:
    spark_job_main(run, "select", __doc__, argv)


if __name__ == "__main__":
    main()
