"""Nightly job: apply every fatigue level to the run's audiences for the plan day (ds + 1, local).

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


def run(spark, settings: Settings, ds: str, loaded) -> dict:
    from features.fatigue import FatigueRules, apply_fatigue

    wh = Warehouse(settings.warehouse)
    rules = FatigueRules.from_config(loaded.config)
    plan = plan_date(ds)
    longest = max(d for _, d in rules.scene_caps.values())
    # Local days reach up to 14 h either side of UTC: one extra UTC day covers them.
    pushes = wh.read_raw(spark, "push_log", (plan - timedelta(days=longest + 1)).isoformat())
    dead = spark.read.parquet(str(wh.dead_tokens)) if wh.dead_tokens.exists() else None
    audiences = wh.read_partition(spark, "plan/audiences", ds)
    eligible, suppressed = apply_fatigue(spark, audiences, wh.read_raw(spark, "users"), pushes, dead, rules, plan)
    e_path = wh.write_partition(eligible, ELIGIBLE, ds, loaded.version)
    s_path = wh.write_partition(suppressed, SUPPRESSED, ds, loaded.version)
    n_in = audiences.count()
    n_eligible = spark.read.parquet(str(e_path)).count()
    reasons = {r["reason"]: r["count"] for r in spark.read.parquet(str(s_path)).groupBy("reason").count().collect()}
    n_suppressed = sum(reasons.values())
    if n_in != n_eligible + n_suppressed:
        raise ReconciliationError(f"fatigue lost pairs for ds={ds}: audiences {n_in} != eligible {n_eligible} + "
                                  f"suppressed {n_suppressed}")
    log.info("fatigue ds=%s plan=%s: %d in = %d eligible + %d suppressed %s", ds, plan, n_in, n_eligible,
             n_suppressed, reasons)
    return {"ds": ds, "plan_date": plan.isoformat(), "config_version": loaded.version, "audience_pairs": n_in,
            "tables": {ELIGIBLE: {"path": str(e_path), "rows": n_eligible},
                       SUPPRESSED: {"path": str(s_path), "rows": n_suppressed}},
            "suppressed_by_reason": dict(sorted(reasons.items()))}


def main(argv=None) -> None:
    spark_job_main(run, "fatigue", __doc__, argv)


if __name__ == "__main__":
    main()
