"""Nightly job: recall candidates for every eligible user x scene and score them with the @champion model.

Writes plan/item_scores (the shortlist's item-level estimate), plan/candidates (what gets scored: user, scene,
material, popularity rank) and plan/scored (the same pairs with p_open, model_version and `interest`: the user
favourited or carted the item or follows its seller, features/pairs.py), partition ds=<ds>, and the
plan day's pair-feature sides (features/sides_user, sides_item, sides_hours) the streaming trigger engine scores with.
Pairs are scored as if sent at the user's usual local hour on the plan day (scheduled scenes at their own local
hour, where they will go out); the send window stage picks the actual hour. plan/scored also holds p_neutral, the
pair scored with the neutral scene code: features/selection.py weighs the model's scene effect by its support.

What gets scored: each scene's `max_candidates` most popular candidates, without the pairs inside the trigger
rules' user x item re-eligibility gap, shortlisted (features.candidates.Shortlist) to each (user, scene,
category)'s `feed.shortlist_per_category` best by the scene's mean p(open) over every candidate of a hash sample
of `feed.shortlist_reference_users` users, plus each (user, scene)'s Push 1.0 draw from all of its candidates,
so the baseline in jobs/select.py draws exactly as it would from every candidate. `shortlist_per_category: null`
scores every candidate.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

from core.settings import Settings
from core.warehouse import Warehouse
from jobs.entry import Phases, as_of_end, plan_date, spark_job_main

log = logging.getLogger(__name__)
SCORED = "plan/scored"
CANDIDATES = "plan/candidates"
ITEM_SCORES = "plan/item_scores"
SIDES_USER, SIDES_ITEM, SIDES_HOURS = "features/sides_user", "features/sides_item", "features/sides_hours"
DEFAULT_LOCAL_HOUR = 20


def run(spark, settings: Settings, ds: str, loaded) -> dict:
    import json

    import mlflow
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from features.candidates import Shortlist, candidates, recall_events
    from features.pairs import LOOKBACK, one_day_features, one_day_sides
    from features.scoring import model_payload, score_pairs
    from features.selection import baseline_salt, recent_pairs
    from jobs.audiences import NIGHTLY_TRIGGERS
    from jobs.rollups import read_activity
    from training.dataset import in_user_sample
    from training.registry import MODEL_NAME, configure_mlflow, resolve_champion

    wh = Warehouse(settings.warehouse)
    as_of = as_of_end(ds)
    first = (date.fromisoformat(ds) - timedelta(days=LOOKBACK + 1)).isoformat()
    users = wh.read_partition(spark, "features/user_features", ds)
    on_sale = wh.read_partition(spark, "features/material_features", ds)
    eligible = wh.read_partition(spark, "plan/eligible", ds)
    events = wh.read_raw(spark, "events", first, ds)
    push_log = wh.read_raw(spark, "push_log", first, ds)
    scenes = [s for s in loaded.config.enabled_scenes if s.trigger in NIGHTLY_TRIGGERS]
    # the trigger rules' user x item re-eligibility gap holds for the nightly plan too
    gap_h = max([t.regap_hours for t in loaded.config.triggers if t.enabled] + [0])
    phase = Phases("score", ds, log)         # where the night's time goes (each phase's outputs are materialised)

    recent = recent_pairs(push_log, as_of - timedelta(hours=gap_h)).cache() if gap_h else None
    # what recall reads of the events, kept on disk once: the estimate's recall and the plan's both read it
    events = recall_events(events, scenes, as_of).persist(StorageLevel.DISK_ONLY)
    n_recall_events = events.count()
    phase("recall_events")

    configure_mlflow(settings.mlflow_tracking_uri, settings.home / "mlflow" / "artifacts")
    version, run_id = resolve_champion()
    estimator = mlflow.sklearn.load_model(f"models:/{MODEL_NAME}/{version}")
    codes_file = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="scene_codes.json")
    codes = json.loads(Path(codes_file).read_text())
    payload = model_payload(spark, estimator)
    plan_day = (plan_date(ds) - date(1970, 1, 1)).days
    # the per-user and per-item features of the plan day, once: the shortlist's estimate and the plan read them
    sides = one_day_sides(wh.read_raw(spark, "users"), read_activity(spark, wh, first, ds), push_log,
                          wh.read_raw(spark, "item_changes", last_ds=ds), wh.read_raw(spark, "items"), plan_day,
                          on_sale.select("item_id"))
    # every user with features, with the local hour their pairs are scored at: the pairs join it once
    hours = users.select("user_id", F.coalesce("peak_local_hour", F.lit(DEFAULT_LOCAL_HOUR)).alias("local_hour"))
    sides = replace(sides, user_side=hours.join(sides.user_side, "user_id", "left")).persist()
    phase("sides")

    # scheduled scenes go out at their local hour (jobs/windows.py): their pairs are scored there, not at the peak
    p = loaded.config.platform
    scene_hours = {s.id: s.send_hour_local if s.send_hour_local is not None else p.baseline_hour_local
                   for s in scenes if s.trigger == "scheduled"}

    def score(cands, neutral=False):
        k = cands.select("user_id", "item_id", "scene_id", "rank", F.lit(plan_day).alias("day"))
        return score_pairs(one_day_features(k, sides, codes, scene_hours), payload, str(version),
                           ["user_id", "scene_id", "item_id", "rank", "local_hour", "interest"], neutral)

    feed = loaded.config.platform.feed
    out = {"ds": ds, "config_version": loaded.version, "model_version": str(version), "tables": {}}
    shortlist = None
    if feed.shortlist_per_category is None:
        # a re-run without the shortlist must not leave an earlier run's estimate beside a plan it did not shape
        shutil.rmtree(wh.partition(ITEM_SCORES, ds), ignore_errors=True)
    else:
        # the estimate: every candidate of a hash sample of users, scored, averaged per (scene, item)
        n_users = eligible.select("user_id").distinct().count()
        rate = min(1.0, feed.shortlist_reference_users / max(n_users, 1))
        sample = eligible.where(in_user_sample(F.col("user_id"), rate))
        estimate = (score(candidates(sample, scenes, users, events, on_sale, as_of, recent))
                    .groupBy("scene_id", "item_id").agg(F.avg("p_open").alias("item_score"),
                                                        F.count("*").alias("reference_users")))
        i_path = wh.write_partition(estimate, ITEM_SCORES, ds, loaded.version)
        scores = {(r["scene_id"], r["item_id"]): r["item_score"]
                  for r in spark.read.parquet(str(i_path)).select("scene_id", "item_id", "item_score").collect()}
        shortlist = Shortlist(scores, feed.shortlist_per_category, baseline_salt(ds))
        out["tables"][ITEM_SCORES] = {"path": str(i_path), "rows": len(scores)}
        out["shortlist"] = {"per_category": feed.shortlist_per_category, "reference_user_rate": round(rate, 6)}
        phase("estimate")
    # materialised (and kept for "why did this user get that item")
    c_path = wh.write_partition(candidates(eligible, scenes, users, events, on_sale, as_of, recent, shortlist),
                                CANDIDATES, ds, loaded.version)
    phase("candidates")
    # the plan's pairs also get p_neutral: the model's scene effect is what the history's support weighs
    path = wh.write_partition(score(spark.read.parquet(str(c_path)), neutral=True), SCORED, ds, loaded.version)
    phase("scored")
    # the same per-user and per-item sides, kept for the streaming trigger engine (jobs/stream.py): it scores a
    # trigger with the plan day's features plus the live context, without Spark
    for name, df in ((SIDES_USER, sides.user_side), (SIDES_ITEM, sides.item_side), (SIDES_HOURS, sides.population)):
        out["tables"][name] = {"path": str(wh.write_partition(df, name, ds, loaded.version))}
    phase("sides_written")
    sides.unpersist()
    events.unpersist()
    if recent is not None:
        recent.unpersist()
    n = spark.read.parquet(str(path)).count()
    n_cands = spark.read.parquet(str(c_path)).count()
    if n != n_cands:    # every candidate's user has features (audiences come from them): none may drop out
        raise RuntimeError(f"plan/scored has {n} rows for {n_cands} rows of plan/candidates at ds={ds}")
    log.info("scored %d pairs (%d candidates, recall from %d events) with %s version %s", n, n_cands,
             n_recall_events, MODEL_NAME, version)
    out["tables"].update({CANDIDATES: {"path": str(c_path), "rows": n_cands}, SCORED: {"path": str(path), "rows": n}})
    out["recall_events"], out["phase_seconds"] = n_recall_events, phase.seconds
    return out


def main(argv=None) -> None:
    spark_job_main(run, "score", __doc__, argv)


if __name__ == "__main__":
    main()
