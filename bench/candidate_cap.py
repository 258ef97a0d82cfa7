"""What scoring fewer candidates per user and scene would cost: expected opens of the selected feeds when only
each (user, scene)'s `cap` most popular candidates are scored, or only each (user, scene, category)'s best
`shortlist` by the item-level estimate (what `feed.shortlist_per_category` does in jobs/score.py), against all
of them, on a scored plan.

    HERMES_CONF=<conf with feed.shortlist_per_category: null> make bench-nightly BENCH_USERS=1000000
    .venv/bin/python bench/candidate_cap.py --home var/bench/nightly-1000000 --ds 2026-10-30 [--sample 0.05]

Reads a plan the nightly scored with every candidate (plan/scored then keeps each candidate with its popularity
`rank` and the model's p_open), keeps a hash sample of whole users, and re-runs the real feed and scene selection
(features.selection) once per variant. The shortlist's estimate is the job's: each (scene, item)'s mean p_open
over the candidates of `--reference-users` users (a hash sample, as the job draws it). Score and select cost grows
with the pairs; this prints what a variant saves (pairs) and what it loses (the model's expected opens of the
chosen feeds, users reached).
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--home", type=Path, required=True, help="HERMES_HOME of a world the nightly ran on")
    p.add_argument("--ds", required=True)
    p.add_argument("--sample", type=float, default=0.05, help="share of users (hash sample of whole users)")
    p.add_argument("--caps", type=int, nargs="*", default=[10, 20, 30])
    p.add_argument("--shortlist", type=int, nargs="*", default=[2, 3, 4, 5, 8])
    p.add_argument("--reference-users", type=int, default=5000)
    args = p.parse_args()

    from pyspark.sql import functions as F

    from core.config.loader import load_config
    from core.settings import Settings
    from core.spark import build_spark
    from core.warehouse import Warehouse
    from features.candidates import shortlist_rows
    from features.selection import feeds, select_scene
    from jobs.audiences import NIGHTLY_TRIGGERS
    from training.dataset import in_user_sample

    settings = replace(Settings.from_env(), home=args.home, warehouse=args.home / "warehouse")
    os.environ["OMP_NUM_THREADS"] = "1"
    spark = build_spark(settings, "bench-candidate-cap")
    wh = Warehouse(settings.warehouse)
    loaded = load_config(settings.conf_dir)
    scenes = [s for s in loaded.config.enabled_scenes if s.trigger in NIGHTLY_TRIGGERS]
    if wh.partition("plan/item_scores", args.ds).exists():
        sys.exit(f"plan/scored at {args.ds} holds only the shortlist (plan/item_scores exists): run the nightly with "
                 "feed.shortlist_per_category: null to score every candidate first")
    scene_df = spark.createDataFrame([(s.id, s.feed_size, s.priority) for s in scenes],
                                     "scene_id string, feed_size int, priority int")
    scored = (wh.read_partition(spark, "plan/scored", args.ds).where(in_user_sample(F.col("user_id"), args.sample))
              .cache())
    items = wh.read_partition(spark, "features/material_features", args.ds).cache()
    per_scene = {r["scene_id"]: (r["pairs"], r["users"]) for r in scored.groupBy("scene_id").agg(
        F.count("*").alias("pairs"), F.countDistinct("user_id").alias("users")).collect()}
    print("pairs per user and scene, by scene: " + ", ".join(
        f"{s} {n / u:.1f}" for s, (n, u) in sorted(per_scene.items())), flush=True)
    full = wh.read_partition(spark, "plan/scored", args.ds)
    n_users = full.select("user_id").distinct().count()
    rate = min(1.0, args.reference_users / n_users)
    estimate = (full.where(in_user_sample(F.col("user_id"), rate)).groupBy("scene_id", "item_id")
                .agg(F.avg("p_open").alias("item_score")).cache())
    with_cat = scored.join(items.select("item_id", "category_id"), "item_id", "left")
    variants = [("all (scene max_candidates)", scored)]
    variants += [(f"{cap} most popular", scored.where(F.col("rank") <= cap)) for cap in sorted(args.caps, reverse=True)]
    variants += [(f"shortlist {k} per category", shortlist_rows(with_cat, estimate, k, F.lit(False)).drop("category_id"))
                 for k in sorted(args.shortlist, reverse=True)]
    rows = []
    for name, pairs in variants:
        chosen = select_scene(feeds(pairs, items, scene_df, loaded.config.platform.feed.max_per_category))
        r = chosen.agg(F.count("*").alias("users"), F.sum("expected_open").alias("opens")).collect()[0]
        rows.append((name, pairs.count(), r["users"], r["opens"]))
        print(f"  {name:<28}: {rows[-1][1]:>12,} pairs, {r['users']:>9,} users, {r['opens']:>10,.1f} expected opens",
              flush=True)
    spark.stop()
    full_pairs, full_users, full_opens = rows[0][1:]
    print(f"\nsample: {args.sample:.0%} of users, {full_users:,} with a feed; estimate from {rate:.2%} of {n_users:,} "
          "users; against scoring every candidate:")
    print("| candidates scored per user x scene | pairs | users reached | expected opens |")
    print("|---|---|---|---|")
    for name, pairs, users, opens in rows:
        print(f"| {name} | {pairs / full_pairs:.1%} | {users / full_users:.2%} | {opens / full_opens:.2%} |")


if __name__ == "__main__":
    main()
