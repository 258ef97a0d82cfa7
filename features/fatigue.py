"""Fatigue: which audience pairs may be pushed on the plan day, and one reason for each that may not.

Every rule counts in the user's *local* calendar day, the plan day: the send day's date, or the date after it in
the zones `leads` names (features/windows.plan_day_lead: east of about UTC+8 the send day's local morning has gone
before the plan's first slot). Rules, in the order a reason is assigned:
holdout (the persistent no-push group, features/holdout.py), opted_out, no_device_token, dead_token,
platform_quota, daily_cap, scene_cap, min_spacing.
in = eligible + suppressed, exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

REASONS = ("holdout", "opted_out", "no_device_token", "dead_token", "platform_quota", "daily_cap", "scene_cap", "min_spacing")


@dataclass(frozen=True)
class FatigueRules:
    max_per_user_per_day: int
    min_spacing_hours: int
    platform_quotas: dict[str, int]
    scene_caps: dict[str, tuple[int, int]]  # scene_id -> (max_pushes, days)
    holdout_share: float = 0.0

    @classmethod
    def from_config(cls, config) -> "FatigueRules":
        p = config.platform
        return cls(max_per_user_per_day=p.fatigue.max_per_user_per_day,
                   min_spacing_hours=p.fatigue.min_spacing_hours,
                   platform_quotas=dict(p.platform_quotas),
                   scene_caps={s.id: (s.cap.max_pushes, s.cap.days) for s in config.scenes},
                   holdout_share=p.holdout_share)


def local_date(ts_col: str, tz_col: str = "tz"):
    return F.to_date(F.from_utc_timestamp(F.col(ts_col), F.col(tz_col)))


def apply_fatigue(spark: SparkSession, audiences: DataFrame, users: DataFrame, push_log: DataFrame,
                  dead_tokens: DataFrame | None, rules: FatigueRules, plan_date: date,
                  leads: dict[str, int] | None = None) -> tuple[DataFrame, DataFrame]:
    """Split audience pairs into (eligible, suppressed) for each user's local plan day: `plan_date` (the send day),
    plus leads[tz] days (default 0) for a user in zone tz.

    users: user_id, tz, platform, opt_in, device_token (raw contract). push_log: the raw contract, covering
    at least the longest scene-cap window before `plan_date`. dead_tokens: user_id, token_sha256 (or None).
    Eligible pairs carry `plan_date` (the user's) and `earliest_send_at`: the first instant the spacing rule allows
    on the plan day."""
    from features.holdout import in_holdout

    send = F.lit(plan_date.isoformat()).cast("date")
    ahead = sorted(z for z, lead in (leads or {}).items() if lead)
    lead = (F.coalesce(F.create_map(*[x for z in ahead for x in (F.lit(z), F.lit(int(leads[z])))])[F.col("tz")],
                       F.lit(0)) if ahead else F.lit(0))
    plan = F.col("plan_date")
    people = users.select("user_id", "tz", "platform", "opt_in", F.date_add(send, lead).alias("plan_date"),
                          F.when(F.length(F.coalesce("device_token", F.lit(""))) > 0, F.sha2("device_token", 256))
                          .alias("token_sha256"))
    if rules.holdout_share > 0:
        # membership is computed in numpy (the same function the trigger run and the evaluation use)
        ids = people.select("user_id").toArrow()["user_id"].to_numpy()
        held = ids[in_holdout(ids, rules.holdout_share)]
        held_df = spark.createDataFrame([(int(u),) for u in held], "user_id long").withColumn("held", F.lit(True))
        people = people.join(F.broadcast(held_df), "user_id", "left")
    else:
        people = people.withColumn("held", F.lit(None).cast("boolean"))
    if dead_tokens is not None:
        dead = dead_tokens.select("user_id", "token_sha256", F.lit(True).alias("dead")).distinct()
        people = people.join(dead, ["user_id", "token_sha256"], "left")
    else:
        people = people.withColumn("dead", F.lit(None).cast("boolean"))

    longest = max([d for _, d in rules.scene_caps.values()] + [1])
    first_day = (plan_date - timedelta(days=longest)).isoformat()
    sent = (push_log.join(people.select("user_id", "tz", "plan_date"), "user_id")
            .withColumn("local_day", local_date("sent_at"))
            .where(F.col("local_day") >= F.lit(first_day).cast("date")))
    per_user = sent.groupBy("user_id").agg(
        F.sum((F.col("local_day") == plan).cast("int")).alias("sent_on_plan_day"),
        F.max("sent_at").alias("last_sent_at"))
    caps = spark.createDataFrame([(s, m, d) for s, (m, d) in sorted(rules.scene_caps.items())],
                                 "scene_id string, cap_max int, cap_days int")
    per_scene = (sent.join(caps, "scene_id")
                 # The cap window is the plan day and the cap_days - 1 local days before it.
                 .where((F.col("local_day") <= plan) & (F.datediff(plan, F.col("local_day")) < F.col("cap_days")))
                 .groupBy("user_id", "scene_id").agg(F.count("*").alias("scene_sent_in_cap")))
    quota = F.create_map(*[x for k, v in sorted(rules.platform_quotas.items()) for x in (F.lit(k), F.lit(v))]) \
        if rules.platform_quotas else None

    day_start = F.to_utc_timestamp(plan.cast("timestamp"), F.col("tz"))
    day_end = F.to_utc_timestamp(F.date_add(plan, 1).cast("timestamp"), F.col("tz"))
    spaced = F.col("last_sent_at") + F.expr(f"INTERVAL {int(rules.min_spacing_hours)} HOURS")
    pairs = (audiences.join(people, "user_id", "left").join(per_user, "user_id", "left")
             .join(per_scene, ["user_id", "scene_id"], "left").join(caps, "scene_id", "left")
             .na.fill({"sent_on_plan_day": 0, "scene_sent_in_cap": 0})
             .withColumn("platform_quota", quota[F.col("platform")] if quota is not None else F.lit(None).cast("int"))
             .withColumn("earliest_send_at", F.greatest(day_start, F.coalesce(spaced, day_start)))
             .withColumn("plan_day_end", day_end))
    reason = (F.when(F.coalesce(F.col("held"), F.lit(False)), "holdout")
              .when(~F.coalesce(F.col("opt_in"), F.lit(False)), "opted_out")
              .when(F.col("token_sha256").isNull(), "no_device_token")
              .when(F.coalesce(F.col("dead"), F.lit(False)), "dead_token")
              .when(F.col("platform_quota").isNotNull() & (F.col("sent_on_plan_day") >= F.col("platform_quota")),
                    "platform_quota")
              .when(F.col("sent_on_plan_day") >= F.lit(rules.max_per_user_per_day), "daily_cap")
              .when(F.col("cap_max").isNotNull() & (F.col("scene_sent_in_cap") >= F.col("cap_max")), "scene_cap")
              .when(F.col("earliest_send_at") >= F.col("plan_day_end"), "min_spacing"))
    judged = pairs.withColumn("reason", reason).withColumn("plan_date", F.coalesce(plan, send))
    eligible = judged.where(F.col("reason").isNull()).select(
        "user_id", "scene_id", "plan_date", "tz", "platform", "earliest_send_at", "plan_day_end",
        "sent_on_plan_day")
    suppressed = judged.where(F.col("reason").isNotNull()).select("user_id", "scene_id", "plan_date", "reason")
    return eligible, suppressed
