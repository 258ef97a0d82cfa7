"""Nightly job: recall candidates for every eligible user x scene and score them with the @champion model.

Writes plan/scored (user, scene, material, p_open, model_version), partition ds=<ds>. Pairs are scored as
if sent at the user's usual local hour on the plan day; the send window stage picks the actual hour.
"""
from __future__ import annotations

import logging
from datetime import date, timedelta
from pathlib import Path

from jobs.entry import as_of_end, plan_date, spark_job_main
from jobs.settings import Settings
from jobs.warehouse import Warehouse

log = logging.getLogger(__name__)
SCORED = "plan/scored"
CANDIDATES = "plan/candidates"
DEFAULT_LOCAL_HOUR = 20


def run(spark, settings: Settings, ds: str, loaded) -> dict:
    import json

    import mlflow
    from pyspark.sql import functions as F

    from features.candidates import candidates
    from features.pairs import LOOKBACK, pair_features
    from features.scoring import model_payload, score_pairs
    from jobs.audiences import NIGHTLY_TRIGGERS
    from training.registry import MODEL_NAME, configure_mlflow, resolve_champion

    wh = Warehouse(settings.warehouse)
    as_of = as_of_end(ds)
    first = (date.fromisoformat(ds) - timedelta(days=LOOKBACK + 1)).isoformat()
    users = wh.read_partition(spark, "features/user_features", ds)
    on_sale = wh.read_partition(spark, "features/material_features", ds)
    eligible = wh.read_partition(spark, "plan/eligible", ds)
    events = wh.read_raw(spark, "events", first, ds)
    scenes = [s for s in loaded.config.enabled_scenes if s.trigger in NIGHTLY_TRIGGERS]
    # materialised once (and kept for debugging "why did this user get that item"): the pair features read
    # the candidates several times, and recall over 28 days of events is too dear to recompute each time
    c_path = wh.write_partition(candidates(eligible, scenes, users, events, on_sale, as_of), CANDIDATES, ds,
                                loaded.version)
    cands = spark.read.parquet(str(c_path))

    configure_mlflow(settings.mlflow_tracking_uri, settings.home / "mlflow" / "artifacts")
    version, run_id = resolve_champion()
    estimator = mlflow.sklearn.load_model(f"models:/{MODEL_NAME}/{version}")
    codes_file = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="scene_codes.json")
    codes = json.loads(Path(codes_file).read_text())

    plan_day = (plan_date(ds) - date(1970, 1, 1)).days
    keys = (cands.join(users.select("user_id", "peak_local_hour"), "user_id")
            .select("user_id", "item_id", "scene_id", "rank", F.lit(plan_day).alias("day"),
                    F.coalesce("peak_local_hour", F.lit(DEFAULT_LOCAL_HOUR)).alias("local_hour")))
    pairs = pair_features(keys, wh.read_raw(spark, "users"), events, wh.read_raw(spark, "push_log", first, ds),
                          wh.read_raw(spark, "item_changes", last_ds=ds), wh.read_raw(spark, "items"), codes,
                          key_day=plan_day)
    scored = score_pairs(pairs, model_payload(spark, estimator), str(version),
                         ["user_id", "scene_id", "item_id", "rank", "local_hour"])
    path = wh.write_partition(scored, SCORED, ds, loaded.version)
    n = spark.read.parquet(str(path)).count()
    log.info("scored %d pairs with %s version %s", n, MODEL_NAME, version)
    n_cands = spark.read.parquet(str(c_path)).count()
    return {"ds": ds, "config_version": loaded.version, "model_version": str(version),
            "tables": {CANDIDATES: {"path": str(c_path), "rows": n_cands}, SCORED: {"path": str(path), "rows": n}}}


def main(argv=None) -> None:
    spark_job_main(run, "score", __doc__, argv)


if __name__ == "__main__":
    main()
