"""Scoring throughput: Hermes' Arrow UDF scorer vs the model's own predict and mlflow.pyfunc.spark_udf.

    .venv/bin/python bench/score.py [--rows 10000000] [--kind hgb|logreg]

Same process, same data: (a) in-process `predict_proba` on one thread x the number of cores (the practical
limit), (b) `mlflow.pyfunc.spark_udf`, (c) `features.scoring.score_pairs` (Arrow UDF, model unpickled once
per worker, see features/scoring.py). Spark paths are timed on a cached DataFrame with a no-op sink.
With --kind logreg also (d): the plan's own call (p_open and p_neutral, `neutral=True`) with the regression scored
as its log-odds (features.scoring.LinearForm) against the same model through predict_proba (an identity step in
front of the pipeline, which the compiled form does not read).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from core.settings import Settings
from core.spark import build_spark
from features.pairs import FEATURES


def synthetic(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(FEATURES)))
    X[:, FEATURES.index("scene_code")] = rng.integers(0, 10, n)
    logit = -2.5 + X[:, :5] @ np.array([0.4, -0.3, 0.5, 0.2, -0.6]) + 0.3 * np.sin(X[:, 7] * 2)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--kind", choices=["hgb", "logreg"], default="hgb")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    cores = os.cpu_count() or 2

    from threadpoolctl import threadpool_limits

    from training.model import make_estimator

    X, y = synthetic(200_000)
    est = make_estimator(args.kind).fit(X, y)
    Xp, _ = synthetic(1_000_000, seed=1)
    with threadpool_limits(1):
        est.predict_proba(Xp[:10_000])
        t = best_of(lambda: est.predict_proba(Xp), 3)
    in_process = len(Xp) / t * cores
    print(f"(a) in-process: {in_process:,.0f} rows/s", flush=True)

    base = Settings.from_env()
    home = Path(tempfile.mkdtemp(prefix="hermes-bench-score-"))
    settings = replace(base, home=home, warehouse=home / "warehouse",
                       mlflow_tracking_uri=f"sqlite:///{home}/mlflow.db")
    os.environ["OMP_NUM_THREADS"] = "1"   # one model thread per Spark task: no oversubscription
    spark = build_spark(settings, "bench-score")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "100000")
    from pyspark.sql import functions as F

    cols = [(F.randn(seed=i) if f != "scene_code" else F.floor(F.rand(seed=i) * 10)).alias(f)
            for i, f in enumerate(FEATURES)]
    df = (spark.range(args.rows, numPartitions=cores * 4)
          .select(F.col("id").alias("user_id"), F.lit("s").alias("scene_id"), F.col("id").alias("item_id"), *cols)
          .cache())
    df.count()

    from features.scoring import model_payload, score_pairs

    payload = model_payload(spark, est)
    ours = lambda: score_pairs(df, payload, "1", ["user_id", "scene_id", "item_id"]).write.format("noop").mode(  # noqa: E731
        "overwrite").save()
    t_ours = best_of(ours, args.repeats)
    print(f"(c) Arrow UDF: {args.rows / t_ours:,.0f} rows/s", flush=True)
    plan_call = {}
    if args.kind == "logreg":
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import FunctionTransformer

        from features.scoring import linear_form

        opaque = Pipeline([("identity", FunctionTransformer()), *est.steps])
        assert linear_form(est) is not None and linear_form(opaque) is None
        for name, model in (("compiled", est), ("predict_proba", opaque)):
            pay = model_payload(spark, model)
            plan_call[name] = best_of(lambda: score_pairs(df, pay, "1", ["user_id", "scene_id", "item_id"],  # noqa: B023
                                                          neutral=True).write.format("noop").mode("overwrite").save(),
                                      args.repeats)
            print(f"(d) p_open and p_neutral, {name}: {args.rows / plan_call[name]:,.0f} rows/s", flush=True)

    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    exp = mlflow.create_experiment("bench", artifact_location=(home / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=exp):
        from training.registry import SKOPS_TRUSTED

        info = mlflow.sklearn.log_model(est, name="model",
                                        skops_trusted_types=SKOPS_TRUSTED if args.kind == "hgb" else None)
    udf = mlflow.pyfunc.spark_udf(spark, info.model_uri, result_type="double", env_manager="local")
    theirs = lambda: df.select("user_id", udf(*[F.col(f) for f in FEATURES]).alias("p")).write.format(  # noqa: E731
        "noop").mode("overwrite").save()
    t_theirs = best_of(theirs, args.repeats)
    spark.stop()

    r_ours, r_theirs = args.rows / t_ours, args.rows / t_theirs
    print(f"\nscoring {args.rows:,} pairs x {len(FEATURES)} features, model={args.kind}, {cores} cores")
    print(f"  (a) in-process predict_proba, 1 thread x {cores} cores : {in_process:>12,.0f} rows/s")
    print(f"  (b) mlflow.pyfunc.spark_udf                      : {r_theirs:>12,.0f} rows/s  ({t_theirs:.1f} s)")
    print(f"  (c) Hermes Arrow UDF scorer                      : {r_ours:>12,.0f} rows/s  ({t_ours:.1f} s)")
    print(f"  (c)/(a) = {r_ours / in_process:.0%}   (c)/(b) = {r_ours / r_theirs:.2f}x")
    if plan_call:
        c, pp = plan_call["compiled"], plan_call["predict_proba"]
        print(f"  (d) the plan's call (p_open + p_neutral): compiled log-odds {args.rows / c:>12,.0f} rows/s ({c:.1f} s), "
              f"predict_proba {args.rows / pp:,.0f} rows/s ({pp:.1f} s): {pp / c:.2f}x")


if __name__ == "__main__":
    main()
