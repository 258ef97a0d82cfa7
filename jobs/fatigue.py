"""Nightly job: apply every fatigue level to the run's audiences for each user's local plan day (ds + 1; with
`windows.plan_day: most_waking_hours`, ds + 2 in the zones east of about UTC+8 whose ds + 1 morning has passed
before the plan's first slot: features/windows.plan_day_lead).

Writes plan/eligible and plan/suppressed (one reason per pair), partition ds=<ds>, and checks that
audiences = eligible + suppressed exactly.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from core.settings import Settings
from core.warehouse import Warehouse
from jobs.entry import plan_date, spark_job_main

log = logging.getLogger(__name__)
ELIGIBLE = "plan/eligible"
SUPPRESSED = "plan/suppressed"


class ReconciliationError(AssertionError):
    pass


def push_history(spark, wh: Warehouse, plan, longest_days: int, policy: str = "hermes"):
    """The pushes fatigue counts for the plan day: those sent before the send day (UTC day `plan`) began, and
    those the previous night's plan holds for the send day's first hours (its slots 24-35, users west of UTC:
    at planning time they are not sent yet, or not all).

    The send day's own receipts are this plan's pushes (or a previous run's of the same plan): counting them
    would make a re-run of a delivered night suppress everyone it already pushed and give them other scenes,
    that is a second push each (issue 25.4). A re-plan must see the history the first plan saw. Local days
    reach 14 h either side of UTC: one extra UTC day at the start covers them."""
    from datetime import datetime, timezone
    from datetime import time as dtime

    from pyspark.sql import functions as F

    from features.windows import DAY_SLOTS

    send_start = datetime.combine(plan, dtime.min, tzinfo=timezone.utc)
    last_ds = (plan - timedelta(days=1)).isoformat()
    sent = (wh.read_raw(spark, "push_log", (plan - timedelta(days=longest_days + 1)).isoformat(), last_ds)
            .where(F.col("sent_at") < F.lit(send_start)))
    prev = (plan - timedelta(days=2)).isoformat()          # the plan made the night before this one
    if not wh.partition("plan/windows", prev).exists():
        return sent
    carried = (spark.read.parquet(str(wh.partition("plan/windows", prev)))
               .where((F.col("policy") == policy) & (F.col("slot") >= DAY_SLOTS))
               .select(F.concat_ws("-", F.lit("planned"), "user_id", "scene_id").alias("push_id"), "user_id",
                       "scene_id", "item_ids", F.col("send_at").alias("sent_at"), "policy"))
    return sent.unionByName(carried, allowMissingColumns=True)


def run(spark, settings: Settings, ds: str, loaded) -> dict:
    from features.fatigue import FatigueRules, apply_fatigue
    from features.windows import plan_day_leads

    wh = Warehouse(settings.warehouse)
    rules = FatigueRules.from_config(loaded.config)
    plan = plan_date(ds)
    longest = max(d for _, d in rules.scene_caps.values())
    pushes = push_history(spark, wh, plan, longest, loaded.config.platform.windows.policy)
    dead = spark.read.parquet(str(wh.dead_tokens)) if wh.dead_tokens.exists() else None
    audiences = wh.read_partition(spark, "plan/audiences", ds)
    users = wh.read_raw(spark, "users")
    p = loaded.config.platform
    leads = {}
    if p.windows.plan_day == "most_waking_hours":
        zones = [r["tz"] for r in users.select("tz").where("tz IS NOT NULL").distinct().collect()]
        leads = plan_day_leads(zones, plan.isoformat(), (p.quiet_hours.start_hour, p.quiet_hours.end_hour),
                               p.windows.first_send_hour_utc)
    eligible, suppressed = apply_fatigue(spark, audiences, users, pushes, dead, rules, plan, leads)
    e_path = wh.write_partition(eligible, ELIGIBLE, ds, loaded.version)
    s_path = wh.write_partition(suppressed, SUPPRESSED, ds, loaded.version)
    n_in = audiences.count()
    n_eligible = spark.read.parquet(str(e_path)).count()
    reasons = {r["reason"]: r["count"] for r in spark.read.parquet(str(s_path)).groupBy("reason").count().collect()}
    n_suppressed = sum(reasons.values())
    by_day = {str(r["plan_date"]): r["count"] for r in
              spark.read.parquet(str(e_path)).groupBy("plan_date").count().collect()}
    if n_in != n_eligible + n_suppressed:
        raise ReconciliationError(f"fatigue lost pairs for ds={ds}: audiences {n_in} != eligible {n_eligible} + "
                                  f"suppressed {n_suppressed}")
    log.info("fatigue ds=%s plan=%s: %d in = %d eligible + %d suppressed %s", ds, plan, n_in, n_eligible,
             n_suppressed, reasons)
    return {"ds": ds, "plan_date": plan.isoformat(), "config_version": loaded.version, "audience_pairs": n_in,
            "zones_planned_a_day_ahead": sorted(z for z, lead in leads.items() if lead),
            "eligible_pairs_by_plan_date": dict(sorted(by_day.items())),
            "tables": {ELIGIBLE: {"path": str(e_path), "rows": n_eligible},
                       SUPPRESSED: {"path": str(s_path), "rows": n_suppressed}},
            "suppressed_by_reason": dict(sorted(reasons.items()))}


def main(argv=None) -> None:
    spark_job_main(run, "fatigue", __doc__, argv)


if __name__ == "__main__":
    main()
